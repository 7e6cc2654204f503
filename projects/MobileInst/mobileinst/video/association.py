# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Kernel association on torch tensors: :mod:`mobileinst_core.association` (numpy,
shared with the ONNX runtime) for kernels K and X_mask given as tensors."""
import torch
from mobileinst_core import association


def cosine_cost(prev_kernels: torch.Tensor, cur_kernels: torch.Tensor) -> torch.Tensor:
    """(N, D), (M, D) -> (N, M) cost 1 - cosine similarity."""
    return torch.from_numpy(association.cosine_cost(prev_kernels.detach().double().cpu().numpy(),
                                                    cur_kernels.detach().double().cpu().numpy())).to(prev_kernels.dtype)


def _np(x):
    return None if x is None else x.detach().float().cpu().numpy()


def associate(prev_kernels: torch.Tensor, cur_kernels: torch.Tensor, mask_features: torch.Tensor = None,
              prev_scores: torch.Tensor = None, cur_scores: torch.Tensor = None, **kwargs) -> torch.Tensor:
    """Permutation ``perm`` such that current query ``perm[i]`` continues track slot ``i``.

    ``mask_features`` (the new keyframe's X_mask, (D, h, w)) and the scores of
    both keyframes are needed with ``mask_weight`` > 0; ``kwargs`` go to
    :func:`mobileinst_core.association.associate`.
    """
    perm = association.associate(_np(prev_kernels), _np(cur_kernels), _np(mask_features), _np(prev_scores),
                                 _np(cur_scores), **kwargs)
    return torch.as_tensor(perm, device=cur_kernels.device)

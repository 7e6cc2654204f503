# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Kernel association: link the kernels K of consecutive keyframes.

cost = 1 - cosine(K_prev, K_cur), solved one-to-one with
``scipy.optimize.linear_sum_assignment`` (MinVIS). Beyond the paper, with
``VIDEO.ASSOCIATION_MASK_WEIGHT`` > 0 confident tracks are matched first to
confident queries on a cost that adds that weight times 1 - IoU of the masks
K_prev . X_mask and K_cur . X_mask on the new keyframe: the previous kernels
are reused one frame further, so the overlap needs no motion model. One-to-one matching keeps
duplicates apart without heuristics or thresholds. The numpy implementation
is shared with the ONNX runtime (``mobileinst_runtime.tracking``).
"""
import torch
from mobileinst_runtime import tracking


def cosine_cost(prev_kernels: torch.Tensor, cur_kernels: torch.Tensor) -> torch.Tensor:
    """(N, D), (M, D) -> (N, M) cost 1 - cosine similarity."""
    return torch.from_numpy(tracking.cosine_cost(prev_kernels.detach().double().cpu().numpy(),
                                                 cur_kernels.detach().double().cpu().numpy())).to(prev_kernels.dtype)


def _np(x):
    return None if x is None else x.detach().float().cpu().numpy()


def associate(prev_kernels: torch.Tensor, cur_kernels: torch.Tensor, mask_features: torch.Tensor = None,
              prev_scores: torch.Tensor = None, cur_scores: torch.Tensor = None, **kwargs) -> torch.Tensor:
    """Permutation ``perm`` such that current query ``perm[i]`` continues track slot ``i``.

    ``mask_features`` (the new keyframe's X_mask, (D, h, w)) and the scores of
    both keyframes are needed with ``mask_weight`` > 0; ``kwargs`` go to
    :func:`mobileinst_runtime.tracking.associate`.
    """
    perm = tracking.associate(_np(prev_kernels), _np(cur_kernels), _np(mask_features), _np(prev_scores),
                              _np(cur_scores), **kwargs)
    return torch.as_tensor(perm, device=cur_kernels.device)

# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Kernel association: link the kernels K of consecutive keyframes.

cost = 1 - cosine(K_prev, K_cur), solved one-to-one with
``scipy.optimize.linear_sum_assignment`` (MinVIS). One-to-one matching keeps
duplicates apart without heuristics or thresholds. The numpy implementation
is shared with the ONNX runtime (``mobileinst_runtime.tracking``).
"""
import torch
from mobileinst_runtime import tracking


def cosine_cost(prev_kernels: torch.Tensor, cur_kernels: torch.Tensor) -> torch.Tensor:
    """(N, D), (M, D) -> (N, M) cost 1 - cosine similarity."""
    return torch.from_numpy(tracking.cosine_cost(prev_kernels.detach().double().cpu().numpy(),
                                                 cur_kernels.detach().double().cpu().numpy())).to(prev_kernels.dtype)


def associate(prev_kernels: torch.Tensor, cur_kernels: torch.Tensor) -> torch.Tensor:
    """Permutation ``perm`` such that current query ``perm[i]`` continues track slot ``i``."""
    perm = tracking.associate(prev_kernels.detach().float().cpu().numpy(), cur_kernels.detach().float().cpu().numpy())
    return torch.as_tensor(perm, device=cur_kernels.device)

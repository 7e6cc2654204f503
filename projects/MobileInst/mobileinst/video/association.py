# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Kernel association: link the kernels K of consecutive keyframes.

cost = 1 - cosine(K_prev, K_cur), solved one-to-one with
``scipy.optimize.linear_sum_assignment`` (MinVIS). One-to-one matching keeps
duplicates apart without heuristics or thresholds.
"""
import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment


def cosine_cost(prev_kernels: torch.Tensor, cur_kernels: torch.Tensor) -> torch.Tensor:
    """(N, D), (M, D) -> (N, M) cost 1 - cosine similarity."""
    return 1.0 - F.normalize(prev_kernels.float(), dim=-1) @ F.normalize(cur_kernels.float(), dim=-1).t()


def associate(prev_kernels: torch.Tensor, cur_kernels: torch.Tensor) -> torch.Tensor:
    """Permutation ``perm`` such that current query ``perm[i]`` continues track slot ``i``.

    Both kernel sets have the same number of queries N.
    """
    cost = cosine_cost(prev_kernels, cur_kernels).cpu().numpy()
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty(len(rows), dtype=np.int64)
    perm[rows] = cols
    return torch.as_tensor(perm, device=cur_kernels.device)

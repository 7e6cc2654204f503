# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Bipartite matching of queries to ground-truth instances.

Score of query i for target j (SparseInst's): ``dice(M_i, T_j)^alpha *
p_i(c_j)^beta``, maximised with ``scipy.optimize.linear_sum_assignment``:
each target gets exactly one query.
"""
from typing import List, Tuple

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn


def pairwise_dice(inputs: torch.Tensor, targets: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Dice coefficient between every row of ``inputs`` (N, P) and of ``targets`` (M, P)."""
    numerator = 2 * inputs @ targets.t()
    denominator = inputs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return numerator / (denominator + eps)


class HungarianMatcher(nn.Module):
    def __init__(self, alpha: float = 0.8, beta: float = 0.2):
        super().__init__()
        self.alpha = alpha
        self.beta = beta

    @torch.no_grad()
    def forward(self, pred_logits: torch.Tensor, pred_masks: torch.Tensor,
                targets: List[dict]) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """
        Args:
            pred_logits: (B, N, C) class logits.
            pred_masks: (B, N, h, w) mask logits.
            targets: per image {"labels": (M,), "masks": (M, h, w) float in [0, 1]}.
        Returns:
            per image (query indices, target indices), both int64 of length M.
        """
        with torch.autocast(device_type=pred_logits.device.type, enabled=False):  # float32 under AMP too
            return self._match(pred_logits.float(), pred_masks.float(), targets)

    def _match(self, pred_logits, pred_masks, targets):
        out = []
        probs = pred_logits.sigmoid()
        masks = pred_masks.sigmoid().flatten(2)
        for b, tgt in enumerate(targets):
            labels = tgt["labels"]
            if labels.numel() == 0:
                empty = torch.zeros(0, dtype=torch.int64)
                out.append((empty, empty))
                continue
            dice = pairwise_dice(masks[b], tgt["masks"].flatten(1).float())
            cls = probs[b][:, labels]
            score = dice.clamp(min=0) ** self.alpha * cls ** self.beta
            rows, cols = linear_sum_assignment(-score.cpu().numpy())
            out.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return out


def batch_indices(indices: List[Tuple[torch.Tensor, torch.Tensor]]):
    """(batch idx, query idx) for gathering matched predictions."""
    batch = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)]) if indices else torch.zeros(0, dtype=torch.int64)
    src = torch.cat([src for src, _ in indices]) if indices else torch.zeros(0, dtype=torch.int64)
    return batch, src


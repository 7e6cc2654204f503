# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Kernel association: link the kernels K of consecutive keyframes (numpy, scipy).

cost = 1 - cosine(K_prev, K_cur), solved one-to-one with
``scipy.optimize.linear_sum_assignment`` (MinVIS; the paper's cosine
similarity). Beyond the paper (VIDEO.ASSOCIATION_MASK_WEIGHT > 0), confident
tracks are matched first to confident queries on a cost that adds the weight
times 1 - IoU of the masks K_prev . X_mask and K_cur . X_mask on the new
keyframe: the previous kernels are reused one frame further, so the overlap
needs no motion model. One-to-one matching keeps duplicates apart without
heuristics.
"""
from typing import Optional

import numpy as np
from scipy.optimize import linear_sum_assignment


def cosine_cost(prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """(N, D), (M, D) -> (N, M): 1 - cosine similarity."""
    a = prev / np.maximum(np.linalg.norm(prev, axis=1, keepdims=True), 1e-12)
    b = cur / np.maximum(np.linalg.norm(cur, axis=1, keepdims=True), 1e-12)
    return 1.0 - a @ b.T


def mask_overlap_cost(prev: np.ndarray, cur: np.ndarray, mask_features: np.ndarray,
                      threshold: float) -> np.ndarray:
    """(N, D), (M, D), X_mask (D, h, w) -> (N, M): 1 - IoU of the binary masks
    sigmoid(K . X_mask) > ``threshold`` of the previous keyframe's kernels K_prev
    (kernel reuse, one frame further) and of the new kernels K_cur, both on the
    new keyframe's X_mask. Two empty masks have IoU 0 (cost 1)."""
    d = mask_features.shape[0]
    x = np.asarray(mask_features, np.float32).reshape(d, -1)
    logit = float(np.log(threshold / (1.0 - threshold)))
    a = ((np.asarray(prev, np.float32) @ x) > logit).astype(np.float32)
    b = ((np.asarray(cur, np.float32) @ x) > logit).astype(np.float32)
    inter = (a @ b.T).astype(np.float64)
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return 1.0 - inter / np.maximum(union, 1.0)


def associate(prev: np.ndarray, cur: np.ndarray, mask_features: Optional[np.ndarray] = None, prev_scores=None,
              cur_scores=None, mask_weight: float = 0.0, score_threshold: Optional[float] = None,
              min_iou: Optional[float] = None, mask_threshold: Optional[float] = None) -> np.ndarray:
    """Permutation ``perm``: current query ``perm[i]`` continues slot ``i``.

    ``mask_weight`` = 0 (the paper): one Hungarian assignment of all slots on
    1 - cosine. ``mask_weight`` > 0 (beyond the paper): live slots (previous
    keyframe score > ``score_threshold``) are first matched to live queries
    (current score > ``score_threshold``) on 1 - cosine + ``mask_weight`` x
    :func:`mask_overlap_cost`, keeping pairs whose masks overlap with IoU >=
    ``min_iou``; so a confident query that took over an object continues its
    track even when a weaker duplicate stays closer in kernel space. The
    remaining slots and queries are then matched on 1 - cosine.

    ``mask_weight`` 0 is the plain cosine assignment, which needs nothing
    else; with ``mask_weight`` > 0 every other argument is required
    (VIDEO.ASSOCIATION_SCORE_THRESHOLD, ASSOCIATION_MIN_IOU and
    INFERENCE.MASK_THRESHOLD, through :class:`mobileinst_core.online_tracker.TrackerSettings`).
    """
    prev = np.asarray(prev, np.float64)
    cur = np.asarray(cur, np.float64)
    cost = cosine_cost(prev, cur)
    perm = np.full(len(prev), -1, dtype=np.int64)
    if mask_weight > 0:
        if mask_features is None or prev_scores is None or cur_scores is None:
            raise ValueError("mask_weight > 0 needs the keyframe's mask features X_mask and both keyframes' scores")
        if score_threshold is None or min_iou is None or mask_threshold is None:
            raise ValueError("mask_weight > 0 needs score_threshold, min_iou and mask_threshold")
        live_prev = np.nonzero(np.asarray(prev_scores) > score_threshold)[0]
        live_cur = np.nonzero(np.asarray(cur_scores) > score_threshold)[0]
        if len(live_prev) and len(live_cur):
            iou = 1.0 - mask_overlap_cost(prev[live_prev], cur[live_cur], mask_features, mask_threshold)
            rows, cols = linear_sum_assignment(cost[np.ix_(live_prev, live_cur)] + mask_weight * (1.0 - iou))
            ok = iou[rows, cols] >= min_iou
            perm[live_prev[rows[ok]]] = live_cur[cols[ok]]
    rows = np.nonzero(perm < 0)[0]
    cols = np.setdiff1d(np.arange(len(cur)), perm[perm >= 0])
    r, c = linear_sum_assignment(cost[np.ix_(rows, cols)])
    perm[rows[r]] = cols[c]
    return perm


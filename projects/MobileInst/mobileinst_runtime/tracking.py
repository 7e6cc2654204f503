# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Track bookkeeping shared by the PyTorch tracker and the ONNX runtime (numpy only).

* kernel association: cost = 1 - cosine(K_prev, K_cur), one-to-one
  (``scipy.optimize.linear_sum_assignment``), MinVIS; beyond the paper,
  confident tracks first, on a cost that adds the overlap of the masks that
  the previous and the new kernels give on the new keyframe's X_mask;
* per slot, class scores averaged over keyframes; per frame, RLEs of the
  slots above the track threshold; the YouTube-VIS result = the top
  ``max_tracks`` (slot, class) pairs.
"""
from typing import Dict, List

import numpy as np
from scipy.optimize import linear_sum_assignment


def cosine_cost(prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """(N, D), (M, D) -> (N, M): 1 - cosine similarity."""
    a = prev / np.maximum(np.linalg.norm(prev, axis=1, keepdims=True), 1e-12)
    b = cur / np.maximum(np.linalg.norm(cur, axis=1, keepdims=True), 1e-12)
    return 1.0 - a @ b.T


def mask_overlap_cost(prev: np.ndarray, cur: np.ndarray, mask_features: np.ndarray,
                      threshold: float = 0.45) -> np.ndarray:
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


def associate(prev: np.ndarray, cur: np.ndarray, mask_features: np.ndarray = None, prev_scores=None,
              cur_scores=None, mask_weight: float = 0.0, score_threshold: float = 0.2, min_iou: float = 0.1,
              mask_threshold: float = 0.45) -> np.ndarray:
    """Permutation ``perm``: current query ``perm[i]`` continues slot ``i``.

    ``mask_weight`` = 0 (the paper): one Hungarian assignment of all slots on
    1 - cosine. ``mask_weight`` > 0 (beyond the paper): live slots (previous
    keyframe score > ``score_threshold``) are first matched to live queries
    (current score > ``score_threshold``) on 1 - cosine + ``mask_weight`` x
    :func:`mask_overlap_cost`, keeping pairs whose masks overlap with IoU >=
    ``min_iou``; so a confident query that took over an object continues its
    track even when a weaker duplicate stays closer in kernel space. The
    remaining slots and queries are then matched on 1 - cosine.
    """
    prev = np.asarray(prev, np.float64)
    cur = np.asarray(cur, np.float64)
    cost = cosine_cost(prev, cur)
    perm = np.full(len(prev), -1, dtype=np.int64)
    if mask_weight > 0:
        if mask_features is None or prev_scores is None or cur_scores is None:
            raise ValueError("mask_weight > 0 needs the keyframe's mask features X_mask and both keyframes' scores")
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


class TrackBook:
    """Class scores per slot (averaged over keyframes) and per-frame RLEs."""

    def __init__(self, max_tracks: int = 10, keep_results: bool = True):
        self.max_tracks = max_tracks
        self.keep_results = keep_results
        self.class_sum = None
        self.num_keyframes = 0
        self.results: List[Dict[int, dict]] = []

    def add_keyframe(self, class_scores: np.ndarray):
        """(N, C) class scores of a keyframe, already in slot order."""
        cs = np.asarray(class_scores, dtype=np.float64)
        self.class_sum = cs.copy() if self.class_sum is None else self.class_sum + cs
        self.num_keyframes += 1

    def mean_class_scores(self) -> np.ndarray:
        return self.class_sum / max(self.num_keyframes, 1)

    def add_frame(self, masks: np.ndarray, slots) -> None:
        """Bool/uint8 masks (k, H, W) of the given slots on the next frame."""
        if not self.keep_results:
            return
        import pycocotools.mask as mask_util  # noqa: F401  (optional dependency of the json output)

        if len(slots) == 0:
            self.results.append({})
            return
        arr = np.asfortranarray(np.ascontiguousarray(masks).transpose(1, 2, 0).astype(np.uint8))
        rles = mask_util.encode(arr)
        self.results.append({int(s): r for s, r in zip(slots, rles)})

    def ytvis_result(self, video_id=None) -> dict:
        """{"video_id", "tracks": [{"score", "category_id" (contiguous), "track_id", "segmentations"}]}."""
        if not self.keep_results:
            raise RuntimeError("keep_results=False: no per-frame masks were kept")
        tracks = []
        if self.class_sum is not None:
            mean = self.mean_class_scores()
            num_classes = mean.shape[1]
            flat = mean.ravel()
            k = min(self.max_tracks, flat.size)
            order = np.argsort(-flat, kind="stable")[:k]
            for i in order:
                slot, cls = divmod(int(i), num_classes)
                segs = [frame.get(slot) for frame in self.results]
                if all(s is None for s in segs):
                    continue
                tracks.append({"score": float(flat[i]), "category_id": cls, "track_id": slot, "segmentations": segs})
        return {"video_id": video_id, "tracks": tracks}

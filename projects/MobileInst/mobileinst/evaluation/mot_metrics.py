# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Tracking quality on mask IoU with the ``motmetrics`` library (CLEAR-MOT and ID measures).

One :class:`motmetrics.MOTAccumulator` per video. On every frame the distance
between a ground-truth object and a prediction is ``1 - mask IoU``; pairs with
IoU below ``iou_threshold`` (0.5) are not candidates (distance NaN). The
library then, frame by frame (Bernardin and Stiefelhagen, 2008):

1. keeps an object's previous prediction id while that prediction is still a
   candidate for it (one-to-one);
2. matches the remaining objects and predictions with a minimum-cost
   assignment that first maximises the number of candidate pairs, then
   minimises the summed distance;
3. counts a switch when an object is matched to an id other than the last id
   it was matched to (however many frames ago), a miss for every unmatched
   object and a false positive for every unmatched prediction.

So a co-existing duplicate mask that covers an object slightly better is not
a switch (rule 1), and a prediction that leaves its object and comes back
after another id took over makes two switches.

IDF1 (Ristani et al., 2016) is computed by the library from one global
identity assignment over the whole video; MOTA is
``1 - (misses + false positives + switches) / objects`` and the library's
MOTP is the mean *distance*, ``1 - mask IoU``, over the matches.
"""
from collections.abc import Mapping
from typing import Dict, Iterable, Optional, Sequence, Union

import motmetrics as mm
import numpy as np
import torch

__all__ = ["TRACKING_METRICS", "mask_iou", "mask_distances", "ytvis_gt_tracks", "accumulate_video", "summarize_tracking"]

TRACKING_METRICS = (
    "idf1", "idp", "idr", "mota", "motp", "num_switches", "num_false_positives", "num_misses",
    "num_matches", "num_objects", "num_predictions", "num_unique_objects", "mostly_tracked",
    "mostly_lost", "num_fragmentations", "num_frames",
)


def _as_flat_masks(masks) -> np.ndarray:
    """(N, H, W) boolean masks (numpy or torch, or a list of (H, W) masks) -> (N, H*W) float32."""
    if isinstance(masks, (list, tuple)):
        if len(masks) == 0:
            return np.zeros((0, 0), np.float32)
        masks = [m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else np.asarray(m) for m in masks]
        masks = np.stack(masks)
    elif isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"expected masks of shape (N, H, W), got {masks.shape}")
    return masks.reshape(masks.shape[0], masks.shape[1] * masks.shape[2]).astype(np.float32)


def mask_iou(gt_masks, pred_masks) -> np.ndarray:
    """IoU of every ground-truth mask with every predicted mask of one frame.

    Args:
        gt_masks, pred_masks: (G, H, W) and (P, H, W) boolean masks (numpy or
            torch, or lists of (H, W) masks) of the same size.

    Returns:
        (G, P) float64 array; 0 where both masks are empty.
    """
    g = _as_flat_masks(gt_masks)
    p = _as_flat_masks(pred_masks)
    if g.shape[0] == 0 or p.shape[0] == 0:
        return np.zeros((g.shape[0], p.shape[0]))
    if g.shape[1] != p.shape[1]:
        raise ValueError(f"ground-truth masks have {g.shape[1]} pixels but predicted masks {p.shape[1]}")
    inter = (g @ p.T).astype(np.float64)  # float32 counts are exact below 2**24 pixels
    union = g.sum(1)[:, None] + p.sum(1)[None, :] - inter
    return inter / np.maximum(union, 1.0)


def mask_distances(gt_masks, pred_masks, iou_threshold: float = 0.5) -> np.ndarray:
    """``1 - mask_iou``, NaN (not a candidate pair) where the IoU is below ``iou_threshold``."""
    iou = mask_iou(gt_masks, pred_masks)
    return np.where(iou >= iou_threshold, 1.0 - iou, np.nan)


def ytvis_gt_tracks(video: dict) -> Dict[int, list]:
    """The ground-truth tracks of one video dict of a YouTube-VIS dataset
    (``annotations``: per frame a list of annotations with ``id``).

    Returns:
        {track id: per frame a bool mask (height, width) or None}.
    """
    from detectron2.data.detection_utils import annotations_to_instances

    ids = sorted({a["id"] for frame in video["annotations"] for a in frame})
    tracks = {i: [None] * video["length"] for i in ids}
    for t, frame in enumerate(video["annotations"]):
        if frame:
            inst = annotations_to_instances(frame, (video["height"], video["width"]), mask_format="bitmask")
            for a, m in zip(frame, inst.gt_masks.tensor):
                tracks[a["id"]][t] = m.numpy()
    return tracks


GTTracks = Union[Mapping, Sequence[Sequence[Optional[np.ndarray]]]]


def accumulate_video(gt_tracks: GTTracks, frame_predictions: Sequence, iou_threshold: float = 0.5,
                     num_frames: Optional[int] = None) -> mm.MOTAccumulator:
    """The ``motmetrics`` events of one video.

    Args:
        gt_tracks: per ground-truth track, per frame a bool mask (H, W) or None;
            a dict {track id: masks} or a list (the id is the index).
        frame_predictions: per frame, :class:`detectron2.structures.Instances`
            with ``pred_masks`` (N, H, W) and ``track_ids`` (N,), or None for a
            frame without predictions.
        iou_threshold: least mask IoU of a candidate pair.
        num_frames: frames of the video; default the longest of the ground
            truth and the predictions (a frame that one side lacks has no
            objects, or no predictions, there).

    Returns:
        a :class:`motmetrics.MOTAccumulator` with one update per frame.
    """
    items = list(gt_tracks.items()) if isinstance(gt_tracks, Mapping) else list(enumerate(gt_tracks))
    if num_frames is None:
        num_frames = max([len(frame_predictions)] + [len(track) for _, track in items])
    acc = mm.MOTAccumulator(auto_id=True)
    for t in range(num_frames):
        present = [(i, track[t]) for i, track in items if t < len(track) and track[t] is not None]
        pred = frame_predictions[t] if t < len(frame_predictions) else None
        if pred is not None and len(pred) > 0:
            hids = [int(i) for i in pred.track_ids]
            if len(set(hids)) != len(hids):
                raise ValueError(f"frame {t}: track ids {hids} are not unique")
            pred_masks = pred.pred_masks
        else:
            hids, pred_masks = [], []
        oids = [i for i, _ in present]
        if oids and hids:
            dists = mask_distances([m for _, m in present], pred_masks, iou_threshold)
        else:
            dists = np.empty((len(oids), len(hids)))
        acc.update(oids, hids, dists)
    return acc


def summarize_tracking(accumulators: Iterable[mm.MOTAccumulator],
                       metrics: Sequence[str] = TRACKING_METRICS) -> Dict[str, Union[int, float, None]]:
    """The ``motmetrics`` measures over all videos together.

    Computed with ``compute_many(..., generate_overall=True)``: counts are
    summed over the videos and the ratios (IDF1, MOTA, ...) computed from the
    sums. The library's overall MOTP is the mean of the videos' MOTP weighted
    by their matches, which is NaN as soon as one video has no match (0 x NaN);
    here such a video adds nothing to it instead.

    (``MOTAccumulator.merge_event_dataframes`` would give the same figures but
    calls ``DataFrame.append``, which pandas 2 removed; motmetrics 1.4.0, the
    latest release, predates the fix.)

    Returns:
        {metric: value}; counts as int, ratios as float, None where undefined
        (e.g. MOTA without objects).
    """
    accumulators = list(accumulators)
    if not accumulators:
        raise ValueError("no video to summarize")
    names = [str(i) for i in range(len(accumulators))]
    wanted = list(metrics)
    if "motp" in wanted and "num_detections" not in wanted:
        wanted.append("num_detections")
    summary = mm.metrics.create().compute_many(accumulators, metrics=wanted, names=names, generate_overall=True)
    overall = summary.loc["OVERALL"]
    out = {}
    for name in metrics:
        value = float(overall[name])
        if name == "motp":
            per_video = summary.loc[names]
            detections = per_video["num_detections"].to_numpy(float)
            value = float(np.nansum(per_video["motp"].to_numpy(float) * detections) / detections.sum()) \
                if detections.sum() > 0 else float("nan")
        if np.isnan(value):
            out[name] = None
        elif name.startswith("num_") or name in ("mostly_tracked", "partially_tracked", "mostly_lost"):
            out[name] = int(round(value))
        else:
            out[name] = value
    return out

# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""How clean the predicted masks are, beyond what AP shows (make demo's
``mask_quality`` entry, ``tools/analysis/mask_quality.py``).

Over the predictions scored >= ``score_threshold`` (those a user would draw):

* ``stray_box_share``: the share of masks whose box is more than
  ``box_ratio`` times (in area) the box of their largest connected part
  (8-connectivity): a few stray pixels far from the object that stretch the box
  across the picture (they cost bbox AP, not much mask AP);
* ``stray_pixel_share``: the mean share of a mask's pixels outside its largest part;
* ``duplicates``: pairs of predictions of one image and class whose masks
  overlap with IoU > ``duplicate_iou`` (what the one-to-one matching of a
  query-based model should leave few of), and ``duplicates_per_object`` (per
  ground-truth object, when their number is given).

The predictions are COCO results (``coco_instances_results.json`` as
detectron2's COCOEvaluator writes it: image_id, category_id, score, RLE
segmentation), so any detectron2 model's output can be measured.
"""
from collections import defaultdict
from typing import Dict, Iterable, Optional

import cv2
import numpy as np
import pycocotools.mask as mask_util


def largest_part(mask: np.ndarray):
    """(H, W) 0/1 mask -> (area of the mask, area of its largest 8-connected part,
    area of the mask's box, area of the largest part's box); all 0 when empty."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return 0, 0, 0, 0
    parts = stats[1:]  # row 0 is the background
    big = parts[parts[:, cv2.CC_STAT_AREA].argmax()]
    x0 = parts[:, cv2.CC_STAT_LEFT].min()
    y0 = parts[:, cv2.CC_STAT_TOP].min()
    x1 = (parts[:, cv2.CC_STAT_LEFT] + parts[:, cv2.CC_STAT_WIDTH]).max()
    y1 = (parts[:, cv2.CC_STAT_TOP] + parts[:, cv2.CC_STAT_HEIGHT]).max()
    return (int(parts[:, cv2.CC_STAT_AREA].sum()), int(big[cv2.CC_STAT_AREA]), int((x1 - x0) * (y1 - y0)),
            int(big[cv2.CC_STAT_WIDTH] * big[cv2.CC_STAT_HEIGHT]))


def mask_quality(results: Iterable[dict], score_threshold: float = 0.3, box_ratio: float = 2.0,
                 duplicate_iou: float = 0.7, num_objects: Optional[int] = None) -> Dict[str, float]:
    """The figures of the module docstring over COCO ``results`` (dicts with
    image_id, category_id, score and an RLE ``segmentation``)."""
    kept = [r for r in results if r["score"] >= score_threshold]
    stray_box = 0
    stray_pixels = []
    groups = defaultdict(list)
    for r in kept:
        rle = r["segmentation"]
        area, big, box, big_box = largest_part(mask_util.decode(rle))
        stray_box += int(box > box_ratio * big_box)
        stray_pixels.append(1.0 - big / area if area else 0.0)
        groups[(r["image_id"], r["category_id"])].append(rle)
    duplicates = 0
    for rles in groups.values():
        if len(rles) > 1:
            iou = mask_util.iou(rles, rles, [0] * len(rles))
            duplicates += int(np.triu(iou > duplicate_iou, 1).sum())
    out = {
        "score_threshold": score_threshold,
        "masks": len(kept),
        "stray_box_share": stray_box / len(kept) if kept else 0.0,
        "stray_pixel_share": float(np.mean(stray_pixels)) if stray_pixels else 0.0,
        "duplicates": duplicates,
        "rule": (f"masks with score >= {score_threshold}; stray box: box > {box_ratio}x the largest "
                 f"8-connected part's box (areas); duplicates: same image and class, mask IoU > {duplicate_iou}"),
    }
    if num_objects is not None:
        out["objects"] = int(num_objects)
        out["duplicates_per_object"] = duplicates / num_objects if num_objects else 0.0
    return out

# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Copy-paste augmentation (Ghiasi et al., "Simple Copy-Paste is a Strong Data
Augmentation Method for Instance Segmentation", CVPR 2021), in its simple form.

Objects of another training image are pasted, pixels through their masks, onto
the image being mapped, before the geometric augmentations. The source image is
resized to the target's size first. Pasted objects occlude the target's: each
target mask loses the pasted pixels, and a target object left with less than
:data:`MIN_VISIBLE_FRACTION` of its area (or fewer than :data:`MIN_VISIBLE_AREA`
pixels) is dropped, as the synthetic data generator drops hidden objects. More
objects per image give the mask kernels K and the class heads more matched
queries, so more supervision per forward pass.
"""
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_util
from detectron2.structures import BoxMode
from detectron2.structures.masks import polygons_to_bitmask

__all__ = ["decode_segmentation", "paste_objects", "MIN_VISIBLE_AREA", "MIN_VISIBLE_FRACTION"]

MIN_VISIBLE_FRACTION = 0.25
MIN_VISIBLE_AREA = 30


def decode_segmentation(segm, height: int, width: int) -> np.ndarray:
    """An annotation's ``segmentation`` (polygons, or RLE with compressed or list
    counts) as an HxW bool array."""
    if isinstance(segm, list):
        return polygons_to_bitmask([np.asarray(p, dtype=np.float64) for p in segm], height, width)
    if isinstance(segm, dict):
        if isinstance(segm.get("counts"), list):
            segm = mask_util.frPyObjects(segm, *segm["size"])
        mask = mask_util.decode(segm).astype(bool)
        if mask.shape != (height, width):
            raise ValueError(f"segmentation of size {mask.shape} on an image of size {(height, width)}")
        return mask
    raise ValueError(f"segmentation must be polygons or an RLE dict, got {type(segm).__name__}")


def _annotation(mask: np.ndarray, like: Dict) -> Dict:
    """``like`` with ``mask`` as its (RLE) segmentation and the box of that mask."""
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    out = {k: v for k, v in like.items() if k not in ("segmentation", "bbox", "bbox_mode", "area")}
    out.update(segmentation=rle, bbox=mask_util.toBbox(rle).tolist(), bbox_mode=BoxMode.XYWH_ABS,
               area=float(mask.sum()))
    return out


def paste_objects(image: np.ndarray, annos: Sequence[Dict], src_image: np.ndarray, src_annos: Sequence[Dict],
                  rng: np.random.Generator, max_objects: int) -> Tuple[np.ndarray, List[Dict]]:
    """Paste 1..``max_objects`` random objects (not crowd) of ``src_image`` /
    ``src_annos`` onto ``image`` / ``annos`` (HxWx3 arrays of one format and
    detectron2 annotation dicts); returns the new image and annotations (the
    target's that stay visible, then the pasted ones). Inputs are not modified."""
    h, w = image.shape[:2]
    sh, sw = src_image.shape[:2]
    candidates = [a for a in src_annos if not a.get("iscrowd", 0)]
    if not candidates or max_objects < 1:
        return image, list(annos)
    k = int(rng.integers(1, min(max_objects, len(candidates)) + 1))
    picked = [candidates[i] for i in sorted(rng.choice(len(candidates), size=k, replace=False))]
    if (sh, sw) != (h, w):
        src_image = cv2.resize(src_image, (w, h), interpolation=cv2.INTER_LINEAR)
    pasted = []
    for a in picked:
        m = decode_segmentation(a["segmentation"], sh, sw)
        if (sh, sw) != (h, w):
            m = cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
        if m.sum() >= MIN_VISIBLE_AREA:
            pasted.append([m, int(m.sum()), a])
    if not pasted:
        return image, list(annos)
    # later pasted objects lie on top of earlier ones
    for i in range(len(pasted) - 1):
        pasted[i][0] = pasted[i][0] & ~np.logical_or.reduce([p[0] for p in pasted[i + 1:]])
    cover = np.logical_or.reduce([p[0] for p in pasted])
    image = image.copy()
    image[cover] = src_image[cover]

    out = []
    for a in annos:
        if a.get("iscrowd", 0):
            out.append(a)
            continue
        m = decode_segmentation(a["segmentation"], h, w)
        if not (m & cover).any():
            out.append(a)
            continue
        visible = m & ~cover
        if visible.sum() >= max(MIN_VISIBLE_AREA, MIN_VISIBLE_FRACTION * m.sum()):
            out.append(_annotation(visible, a))
    for m, full_area, a in pasted:
        if m.sum() >= max(MIN_VISIBLE_AREA, MIN_VISIBLE_FRACTION * full_area):
            out.append(_annotation(m, a))
    return image, out

# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Annotations without a usable mask.

MobileInst learns from masks only: an annotation whose segmentation is missing,
empty (``"segmentation": []``), has no valid polygon (fewer than 3 points) or
covers no area cannot be matched or supervised. detectron2's COCO loader
drops polygons with fewer than 3 points itself (with a count); the rest reach
the mapper and fail there, far from the cause. :func:`drop_annotations_without_masks`
drops them from the training set with one warning that counts them and names
the first few (image file, annotation id).
"""
import logging
from typing import List, Optional

import numpy as np
import pycocotools.mask as mask_util

logger = logging.getLogger(__name__)

__all__ = ["mask_problem", "drop_annotations_without_masks"]

# How many dropped annotations a warning names.
NAMED = 5


def _has_area(poly) -> bool:
    """True unless every point of the flat polygon lies on one line (or on one point):
    such a polygon covers no area. Checks the cross product against the first two
    distinct points; returns at the first point off that line (usually the third)."""
    x0, y0 = poly[0], poly[1]
    n = len(poly) // 2
    for i in range(1, n):
        dx, dy = poly[2 * i] - x0, poly[2 * i + 1] - y0
        if dx or dy:
            break
    else:
        return False
    for j in range(i + 1, n):
        if abs(dx * (poly[2 * j + 1] - y0) - dy * (poly[2 * j] - x0)) > 1e-6:
            return True
    return False


def mask_problem(segm, height: Optional[int] = None, width: Optional[int] = None) -> Optional[str]:
    """Why ``segm`` (a detectron2 / COCO segmentation) gives no usable mask, or None if it does.

    Polygons: a list of flat [x0, y0, x1, y1, ...] lists; usable if one has at
    least 3 points not all on one line. RLE: a dict with "counts" and "size";
    usable if its area is non-zero. A 2D array: usable if any pixel is set.
    """
    if segm is None or (isinstance(segm, list) and len(segm) == 0):
        # detectron2's COCO loader turns "segmentation": [] into no "segmentation" key
        return "missing or empty segmentation"
    if isinstance(segm, list):
        if not all(isinstance(p, (list, tuple)) for p in segm):
            return "not a list of polygons"
        polys = [p for p in segm if len(p) % 2 == 0 and len(p) >= 6]
        if not polys:
            return "no polygon with 3 or more points"
        if not any(_has_area(p) for p in polys):
            return "zero-area polygon"
        return None
    if isinstance(segm, dict):
        if "counts" not in segm or "size" not in segm:
            return "RLE without 'counts' / 'size'"
        rle = segm
        if isinstance(segm["counts"], list):
            rle = mask_util.frPyObjects(segm, *segm["size"])
        elif isinstance(segm["counts"], str):
            rle = dict(segm, counts=segm["counts"].encode("ascii"))
        return None if float(mask_util.area(rle)) > 0 else "empty RLE mask"
    if isinstance(segm, np.ndarray):
        return None if segm.ndim == 2 and segm.any() else "empty mask array"
    return f"unsupported segmentation type {type(segm).__name__}"


def _frame_lists(record):
    """(file names, annotation lists) of an image dict or of a video dict's frames."""
    annos = record.get("annotations")
    if annos is None:
        return [], []
    if "file_names" in record:  # a video: one annotation list per frame
        return list(record["file_names"]), list(annos)
    return [record.get("file_name")], [annos]


def drop_annotations_without_masks(dataset_dicts: List[dict], dataset_name: str = "") -> List[dict]:
    """The image / video dicts without the non-crowd annotations that have no usable mask
    (:func:`mask_problem`), with one warning that counts them and names the first few.
    Images left without objects stay (detectron2's ``DATALOADER.FILTER_EMPTY_ANNOTATIONS``
    decides about them). Records are copied where they change, never modified."""
    out, named, reasons, total, emptied = [], [], {}, 0, 0
    for record in dataset_dicts:
        h, w = record.get("height"), record.get("width")
        files, frames = _frame_lists(record)
        new_frames, changed = [], False
        for file_name, annos in zip(files, frames):
            keep = []
            for i, a in enumerate(annos):
                total += 1
                why = None if a.get("iscrowd", 0) else mask_problem(a.get("segmentation"), h, w)
                if why is None:
                    keep.append(a)
                    continue
                changed = True
                reasons[why] = reasons.get(why, 0) + 1
                if len(named) < NAMED:
                    ident = f"id {a['id']}" if "id" in a else f"#{i} of the image"
                    named.append(f"'{file_name}' annotation {ident} ({why})")
            new_frames.append(keep)
        if changed:
            record = dict(record, annotations=new_frames if "file_names" in record else new_frames[0])
            if not any(a.get("iscrowd", 0) == 0 for f in new_frames for a in f):
                emptied += 1
        out.append(record)
    n = sum(reasons.values())
    if n:
        unit = "videos" if out and "file_names" in out[0] else "images"
        logger.warning(
            f"{dataset_name or 'dataset'}: dropped {n} of {total} annotations without a usable mask ("
            + ", ".join(f"{why}: {k}" for why, k in sorted(reasons.items())) + "), e.g. "
            + "; ".join(named) + (f"; ... and {n - len(named)} more" if n > len(named) else "")
            + (f". {emptied} {unit} are left without objects" if emptied else "")
        )
    return out

# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""YouTube-VIS results json: per-frame RLEs and the submission entries.

One writer for the evaluator (``mobileinst.evaluation``), the demo and the
runtime (:func:`mobileinst_core.writer.write_tracks`). pycocotools is imported
where a mask has to be encoded.
"""
from typing import Optional, Sequence

import numpy as np

from .categories import to_dataset_id


def to_rle(segm, height: Optional[int] = None, width: Optional[int] = None):
    """
    Convert one frame's segmentation to a compressed RLE dict (counts as bytes), or None.

    Accepts None, compressed RLE (counts bytes or str), uncompressed RLE (counts list),
    polygons (needs height/width) or a HxW binary numpy array.
    """
    if segm is None:
        return None
    if isinstance(segm, dict):
        counts = segm["counts"]
        if isinstance(counts, list):
            import pycocotools.mask as mask_util

            h, w = segm["size"]
            return mask_util.frPyObjects(segm, h, w)
        if isinstance(counts, str):
            counts = counts.encode("ascii")
        return {"size": [int(x) for x in segm["size"]], "counts": counts}
    if isinstance(segm, np.ndarray):
        import pycocotools.mask as mask_util

        return mask_util.encode(np.asfortranarray(segm.astype(np.uint8)))
    if isinstance(segm, list):
        if height is None or width is None:
            raise ValueError("polygon segmentations need the frame height and width")
        if len(segm) == 0:
            return None
        import pycocotools.mask as mask_util

        return mask_util.merge(mask_util.frPyObjects(segm, height, width))
    raise ValueError(f"unknown segmentation type {type(segm)}")


def rle_to_json(rle):
    """A compressed RLE (counts bytes or str) -> {"size", "counts": str}; None stays None."""
    if rle is None:
        return None
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return {"size": [int(x) for x in rle["size"]], "counts": counts}


def ytvis_entries(result: dict, video_id=None, category_ids: Optional[Sequence[int]] = None) -> list:
    """A tracker result {"video_id", "tracks": [{"score", "category_id" (contiguous),
    ["track_id"], "segmentations"}]} -> YouTube-VIS results entries {"video_id",
    "category_id" (dataset id), "score", ["track_id"], "segmentations": [{"size",
    "counts": str} | None per frame]}.

    ``video_id`` defaults to the result's; ``category_ids`` maps contiguous class
    indices to dataset category ids (:func:`mobileinst_core.categories.to_dataset_id`).
    A frame's segmentation may be any form :func:`to_rle` takes.
    """
    vid = result.get("video_id") if video_id is None else video_id
    out = []
    for t in result["tracks"]:
        entry = {"video_id": vid, "category_id": to_dataset_id(t["category_id"], category_ids),
                 "score": float(t["score"])}
        if "track_id" in t:
            entry["track_id"] = int(t["track_id"])
        entry["segmentations"] = [rle_to_json(to_rle(s)) for s in t["segmentations"]]
        out.append(entry)
    return out

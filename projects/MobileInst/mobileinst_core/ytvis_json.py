# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""YouTube-VIS results json: per-frame RLEs and the submission entries.

One writer for the evaluator (``mobileinst.evaluation``), the demo and the
runtime (:func:`mobileinst_core.writer.write_tracks`, through :class:`YtvisJsonStream`,
which writes it as the frames come). pycocotools is imported where a mask has to be
encoded.
"""
import json
import os
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


class YtvisJsonStream:
    """The YouTube-VIS results json of one tracked stream, written as it goes: constant
    memory however long the stream (a camera may run for hours).

    Each frame's masks are encoded and appended to a spool file (one line per frame:
    {slot: RLE counts}) as the frame comes; :meth:`write` then writes the entries of
    the top tracks (``OnlineTracker.top_tracks``, known only at the end) by reading the
    spool once per track. The json is that of :func:`ytvis_entries` on the same frames.
    Write errors (a full disk) are ``OSError`` naming the final json file.
    """

    def __init__(self, spool_path: str, json_path: str):
        from .files import write_error

        self._write_error = write_error
        self.spool_path, self.json_path = spool_path, json_path
        self.size = None  # (H, W) of the frames
        self.frames = 0
        self.slots = set()  # slots that had a mask on some frame
        try:
            self._spool = open(spool_path, "w")
        except OSError as e:
            raise write_error(e, json_path) from e

    def add_frame(self, masks: np.ndarray, slots: Sequence[int], size: Sequence[int]):
        """Bool (k, H, W) masks of the tracked ``slots`` on the next frame of ``size``."""
        counts = {}
        if len(slots):
            import pycocotools.mask as mask_util

            arr = np.asfortranarray(np.ascontiguousarray(masks).transpose(1, 2, 0).astype(np.uint8))
            for s, r in zip(slots, mask_util.encode(arr)):
                counts[str(int(s))] = r["counts"].decode("ascii")
                self.slots.add(int(s))
        self.size = [int(size[0]), int(size[1])]
        try:
            self._spool.write(json.dumps(counts) + "\n")
        except OSError as e:
            raise self._write_error(e, self.json_path) from e
        self.frames += 1

    def write(self, path: str, tracks, video_id=None, category_ids: Optional[Sequence[int]] = None):
        """Write the json to ``path`` (a temporary name, flushed and synced; the caller
        renames it): the entries of ``tracks`` [(slot, class (contiguous), score)],
        best first, leaving out slots that never had a mask."""
        try:
            self._spool.close()
            with open(path, "w") as out, open(self.spool_path) as spool:
                out.write("[")
                first = True
                for slot, cls, score in tracks:
                    if slot not in self.slots:
                        continue
                    entry = {"video_id": video_id, "category_id": to_dataset_id(cls, category_ids),
                             "score": float(score), "track_id": int(slot)}
                    out.write(("" if first else ", ") + json.dumps(entry)[:-1] + ', "segmentations": [')
                    first = False
                    spool.seek(0)
                    key = str(int(slot))
                    for k, line in enumerate(spool):
                        c = json.loads(line).get(key)
                        seg = "null" if c is None else json.dumps({"size": self.size, "counts": c})
                        out.write((", " if k else "") + seg)
                    out.write("]}")
                out.write("]")
                out.flush()
                os.fsync(out.fileno())
        except OSError as e:
            raise self._write_error(e, self.json_path) from e
        return path

    def close(self):
        """Close and remove the spool (idempotent). Its write errors are not raised here:
        the spool is discarded, and a failed run's own error is the one to report."""
        try:
            self._spool.close()
        except OSError:
            pass
        if os.path.exists(self.spool_path):
            os.remove(self.spool_path)

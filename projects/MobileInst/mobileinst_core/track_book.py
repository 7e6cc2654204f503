# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Track bookkeeping of the online tracker (numpy; pycocotools for the RLEs).

Per slot, class scores averaged over keyframes (MinVIS); per frame, the RLEs of
the slots above the track threshold; the YouTube-VIS result = the top
``max_tracks`` (slot, class) pairs.
"""
from typing import Dict, List, Tuple

import numpy as np


class TrackBook:
    """Class scores per slot (averaged over keyframes) and per-frame RLEs."""

    def __init__(self, max_tracks: int, keep_results: bool = True):
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

    def top_tracks(self) -> List[Tuple[int, int, float]]:
        """The top ``max_tracks`` (slot, class (contiguous), score) pairs by class score
        averaged over keyframes, best first; needs no per-frame masks (a writer that
        streams them, :class:`mobileinst_core.ytvis_json.YtvisJsonStream`, takes these)."""
        if self.class_sum is None:
            return []
        mean = self.mean_class_scores()
        num_classes = mean.shape[1]
        flat = mean.ravel()
        order = np.argsort(-flat, kind="stable")[:min(self.max_tracks, flat.size)]
        return [(*divmod(int(i), num_classes), float(flat[i])) for i in order]

    def ytvis_result(self, video_id=None) -> dict:
        """{"video_id", "tracks": [{"score", "category_id" (contiguous), "track_id", "segmentations"}]}."""
        if not self.keep_results:
            raise RuntimeError("keep_results=False: no per-frame masks were kept")
        tracks = []
        for slot, cls, score in self.top_tracks():
            segs = [frame.get(slot) for frame in self.results]
            if all(s is None for s in segs):
                continue
            tracks.append({"score": score, "category_id": cls, "track_id": slot, "segmentations": segs})
        return {"video_id": video_id, "tracks": tracks}

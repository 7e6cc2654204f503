# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Run a tracker over a frame source and write tracks.mp4 + results.json (atomically)."""
import os
from typing import Callable, Iterable, Optional, Sequence, Tuple

import cv2
import numpy as np

from .files import atomic_write_json, prepare_output_dir, remove_if_empty
from .visualize import draw_tracks
from .ytvis_json import ytvis_entries


def write_tracks(frames: Iterable[Tuple[int, np.ndarray]], step: Callable, ytvis_result: Callable,
                 output_dir: str, fps: float, class_names: Optional[Sequence[str]] = None,
                 score_threshold: float = 0.3, video_id=1, category_ids=None):
    """``step(frame) -> (masks (k,H,W) bool, track_ids, classes, scores)`` per BGR frame;
    ``ytvis_result(video_id)`` after the last frame. Returns (video path, json path, frames).

    ``output_dir`` is created and checked for writing before the first frame is
    read. Both files are written under temporary names and renamed when
    complete, so an interrupted run leaves no half-written output (and no
    output folder that it created).
    """
    created = prepare_output_dir(output_dir)
    video_path = os.path.join(output_dir, "tracks.mp4")
    json_path = os.path.join(output_dir, "results.json")
    tmp_video = os.path.join(output_dir, ".tracks.tmp.mp4")
    writer, n = None, -1
    try:
        for n, frame in frames:
            masks, ids, classes, scores = step(frame)
            vis = draw_tracks(frame, masks, ids, classes, scores, class_names, score_threshold)
            if writer is None:
                h, w = frame.shape[:2]
                writer = cv2.VideoWriter(tmp_video, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                if not writer.isOpened():
                    raise OSError(f"Cannot open a video writer for '{tmp_video}'")
            writer.write(vis)
    except BaseException:
        if writer is not None:
            writer.release()
        if os.path.exists(tmp_video):
            os.remove(tmp_video)
        remove_if_empty(output_dir, created)
        raise
    if writer is None:
        remove_if_empty(output_dir, created)
        raise ValueError("The input has no frames")
    writer.release()
    os.replace(tmp_video, video_path)
    atomic_write_json(json_path, ytvis_entries(ytvis_result(video_id), video_id, category_ids))
    return video_path, json_path, n + 1

# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Run a tracker over a frame source and write tracks.mp4 + results.json, whole or not at all."""
import errno
import os
from typing import Callable, Iterable, Optional, Sequence, Tuple

import cv2
import numpy as np

from .files import Staged, prepare_output_dir, remove_if_empty, temp_name
from .visualize import draw_tracks
from .ytvis_json import YtvisJsonStream

VIDEO_FILE, JSON_FILE = "tracks.mp4", "results.json"
FOURCC = "mp4v"


def open_video_writer(tmp_path: str, final_path: str, fps: float, frame_shape, input_name: str):
    """OpenCV's writer for frames of ``frame_shape`` into ``tmp_path``; a size it cannot
    take is a ``ValueError`` naming the input and the size, before any frame is processed."""
    h, w = frame_shape[:2]
    if h < 2 or w < 2:
        raise ValueError(f"Input {input_name}: frames of {w}x{h} (WxH) cannot be written to the {FOURCC} video "
                         f"'{final_path}' (it needs frames of at least 2x2)")
    writer = cv2.VideoWriter(tmp_path, cv2.VideoWriter_fourcc(*FOURCC), fps, (w, h))
    if not writer.isOpened():
        raise OSError(errno.EIO, f"Cannot open a {FOURCC} video writer for '{final_path}' "
                                 f"(frames of {w}x{h} (WxH) from input {input_name})")
    return writer


def check_video(tmp_path: str, final_path: str, frames: int):
    """OpenCV's video writer reports no write error (a full disk gives a file cut short):
    the written file must be there, not empty, open again and hold ``frames`` frames;
    else ``OSError`` naming ``final_path``."""
    size = os.path.getsize(tmp_path) if os.path.exists(tmp_path) else 0
    cap = cv2.VideoCapture(tmp_path) if size else None
    try:
        if cap is None or not cap.isOpened():
            raise OSError(errno.EIO, f"Cannot write '{final_path}': the video written ({size} bytes) does not "
                                     "open again (a full disk, or a file system that refused the writes?)")
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        if cap is not None:
            cap.release()
    if count != frames:
        raise OSError(errno.EIO, f"Cannot write '{final_path}': the video holds {count} frames of the {frames} "
                                 "written (a full disk?)")


def write_tracks(frames: Iterable[Tuple[int, np.ndarray]], step: Callable, top_tracks: Callable,
                 output_dir: str, fps: float, class_names: Optional[Sequence[str]] = None,
                 score_threshold: float = 0.3, video_id=1, category_ids=None, input_name: str = "the input"):
    """``step(frame) -> (masks (k,H,W) bool, track_ids, classes, scores)`` per BGR frame;
    ``top_tracks()`` after the last frame: the (slot, class, score) of the tracks the
    json keeps (``OnlineTracker.top_tracks``). Returns (video path, json path, frames).

    ``output_dir`` is created and checked for writing before the first frame is read.
    The video and the json are written as the frames come (the json's masks spooled,
    :class:`~mobileinst_core.ytvis_json.YtvisJsonStream`: memory does not grow with
    the stream), under temporary names; after the last frame the video is checked
    (:func:`check_video`), both are synced and renamed in together
    (:class:`~mobileinst_core.files.Staged`). A failure at any point (an error, a full
    disk, Ctrl-C, SIGTERM under :func:`mobileinst_core.cli.sigterm_exits`) leaves the
    earlier tracks.mp4 / results.json as they were, no temporary file, and no output
    folder that the run created.
    """
    created = prepare_output_dir(output_dir)
    video_path, json_path = os.path.join(output_dir, VIDEO_FILE), os.path.join(output_dir, JSON_FILE)
    staged = Staged()
    tmp_video, tmp_json = staged.add(video_path), staged.add(json_path)
    results, writer, n = None, None, 0
    try:
        results = YtvisJsonStream(temp_name(json_path, "spool"), json_path)
        for _, frame in frames:
            if writer is None:
                writer = open_video_writer(tmp_video, video_path, fps, frame.shape, input_name)
            masks, ids, classes, scores = step(frame)
            results.add_frame(masks, ids, frame.shape[:2])
            writer.write(draw_tracks(frame, masks, ids, classes, scores, class_names, score_threshold))
            n += 1
        if writer is None:
            raise ValueError(f"Input {input_name} has no frames")
        writer.release()
        writer = None
        check_video(tmp_video, video_path, n)
        results.write(tmp_json, top_tracks(), video_id, category_ids)
        staged.commit()
    finally:
        if writer is not None:
            writer.release()
        if results is not None:
            results.close()
        staged.discard()
        if not staged.committed:
            remove_if_empty(output_dir, created)
    return video_path, json_path, n

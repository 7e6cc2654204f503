# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Frame sources: a video file, a folder of frames or a camera (OpenCV only)."""
import os
from typing import Iterator, Tuple, Union

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def iter_frames(source: Union[str, int]) -> Iterator[Tuple[int, np.ndarray]]:
    """Yield (index, BGR frame) from a video file, a folder of frames or a camera index."""
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        cap = cv2.VideoCapture(int(source))
        if not cap.isOpened():
            raise OSError(f"Cannot open camera {source}")
        yield from _read_capture(cap, f"camera {source}")
        return
    if os.path.isdir(source):
        files = sorted(f for f in os.listdir(source) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise FileNotFoundError(f"Folder '{source}' holds no frames ({', '.join(IMAGE_EXTENSIONS)})")
        for i, f in enumerate(files):
            path = os.path.join(source, f)
            frame = cv2.imread(path, cv2.IMREAD_COLOR)
            if frame is None:
                raise OSError(f"Cannot decode frame '{path}'")
            yield i, frame
        return
    if not os.path.exists(source):
        raise FileNotFoundError(f"Video '{source}' does not exist")
    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        raise OSError(f"Cannot decode video '{source}'")
    yield from _read_capture(cap, source)


def _read_capture(cap, name) -> Iterator[Tuple[int, np.ndarray]]:
    i = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            yield i, frame
            i += 1
    finally:
        cap.release()
    if i == 0:
        raise OSError(f"Cannot decode any frame of '{name}'")


def video_fps(source, default: float = 10.0) -> float:
    if isinstance(source, str) and os.path.isfile(source):
        cap = cv2.VideoCapture(source)
        fps = cap.get(cv2.CAP_PROP_FPS)
        cap.release()
        if fps and fps > 0:
            return float(fps)
    return default

# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Frames: checks, sources (a video file, a folder of frames or a camera) and the
letterbox into a graph's fixed input (numpy + OpenCV)."""
import os
from typing import Iterator, Sequence, Tuple, Union

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

EXPECTED_FRAME = "an HxWx3 uint8 BGR numpy array (as cv2.imread / cv2.VideoCapture give)"


def _describe(frame) -> str:
    if frame is None:
        return "None"
    if not isinstance(frame, np.ndarray):
        shape = getattr(frame, "shape", None)
        return f"a {type(frame).__module__}.{type(frame).__name__}" + (f" of shape {tuple(shape)}" if shape else "")
    return f"a {frame.dtype} array of shape {frame.shape}"


def check_frame(frame, name: str = "frame") -> np.ndarray:
    """Return ``frame`` if it is an HxWx3 uint8 BGR numpy array (H, W > 0); otherwise raise
    a ``TypeError`` / ``ValueError`` that says what was given, what is expected and how
    to convert it. ``name`` (e.g. "Frame 12") starts the message."""
    if frame is None:
        raise TypeError(f"{name} is None; expected {EXPECTED_FRAME}. cv2.imread returns None for a file "
                        "it cannot read.")
    if not isinstance(frame, np.ndarray):
        hint = ""
        if type(frame).__name__ == "Tensor":
            hint = " For a CxHxW tensor: tensor.permute(1, 2, 0).cpu().numpy()."
        elif type(frame).__module__.startswith("PIL"):
            hint = " For a PIL image: np.asarray(image)[:, :, ::-1] (RGB -> BGR)."
        raise TypeError(f"{name} is {_describe(frame)}; expected {EXPECTED_FRAME}.{hint}")
    if frame.ndim != 3 or frame.shape[2] != 3:
        if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
            hint = " A single-channel frame: cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)."
        elif frame.ndim == 3 and frame.shape[2] == 4:
            hint = " A frame with alpha: cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)."
        elif frame.ndim == 3 and frame.shape[0] == 3:
            hint = " Channels first? frame.transpose(1, 2, 0)."
        else:
            hint = ""
        raise ValueError(f"{name} is {_describe(frame)}; expected {EXPECTED_FRAME}.{hint}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"{name} is {_describe(frame)}, which is empty; expected {EXPECTED_FRAME} with H, W > 0.")
    if frame.dtype != np.uint8:
        hint = ""
        if frame.dtype.kind == "f" and frame.size:
            lo, hi = float(np.nanmin(frame)), float(np.nanmax(frame))
            hint = f" Its values are in [{lo:g}, {hi:g}]: "
            hint += ("for [0, 1] images, (frame * 255).round().astype(np.uint8)." if hi <= 1.0 else
                     "np.clip(frame, 0, 255).round().astype(np.uint8).")
        elif frame.dtype == np.uint16:
            hint = " A 16-bit frame: (frame // 257).astype(np.uint8)."
        elif frame.dtype.kind in "iu":
            hint = " Values in [0, 255]: np.clip(frame, 0, 255).astype(np.uint8)."
        elif frame.dtype == np.bool_:
            hint = " frame.astype(np.uint8) * 255."
        raise ValueError(f"{name} is {_describe(frame)}; expected {EXPECTED_FRAME}.{hint}")
    return frame


def check_source(source: Union[str, int]):
    """Raise ``FileNotFoundError`` if ``source`` (a video file, a folder of frames, or a
    camera index) cannot be a frame source; cheap, reads no frame."""
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        return
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"Input {source!r}: expected a video file, a folder of frames or a camera index")
    source = os.fspath(source)
    if os.path.isdir(source):
        if not any(f.lower().endswith(IMAGE_EXTENSIONS) for f in os.listdir(source)):
            raise FileNotFoundError(f"Folder '{source}' holds no frames ({', '.join(IMAGE_EXTENSIONS)})")
    elif not os.path.exists(source):
        raise FileNotFoundError(f"Video '{source}' does not exist")


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


class Letterbox:
    """Resize a BGR frame into a fixed (height, width) input, aspect kept, padded
    with the pixel mean, in the graph's channel order (``input_format`` "RGB" or "BGR").

    Returns ((1, 3, height, width) float32, (rh, rw) the size of the valid region).
    """

    def __init__(self, input_size: Sequence[int], input_format: str, pixel_mean: Sequence[float]):
        self.h, self.w = int(input_size[0]), int(input_size[1])
        self.rgb = input_format == "RGB"
        self.pad_value = np.array(pixel_mean, np.float32)

    def __call__(self, frame_bgr: np.ndarray):
        fh, fw = frame_bgr.shape[:2]
        scale = min(self.h / fh, self.w / fw)
        rh, rw = min(self.h, int(round(fh * scale))), min(self.w, int(round(fw * scale)))
        img = frame_bgr[:, :, ::-1] if self.rgb else frame_bgr
        if (rh, rw) != (fh, fw):
            img = cv2.resize(img, (rw, rh), interpolation=cv2.INTER_LINEAR)
        canvas = np.empty((self.h, self.w, 3), np.float32)
        canvas[:] = self.pad_value
        canvas[:rh, :rw] = img
        return canvas.transpose(2, 0, 1)[None], (rh, rw)

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


class IncompleteInputError(OSError):
    """A video file ended before the frames its container announces; raised after the
    output of the frames read was written (:meth:`FrameSource.check_complete`)."""


class FrameSource:
    """The frames of a video file, a folder of frames or a camera index: iterate for
    (index, BGR frame). Errors (nothing to read, a frame file that does not decode)
    are raised when iterating, naming the input.

    A video file whose frames stop decoding partway (a truncated copy) ends the
    iteration where decoding stops; afterwards :attr:`shortfall` says how many frames
    were read against the count the container announces (None when all were read,
    or for a folder or a camera, which announce none)."""

    def __init__(self, source: Union[str, int]):
        self.source = source
        self.read = 0  # frames yielded so far
        self.announced = None  # the container's frame count (video files)

    @property
    def name(self) -> str:
        s = self.source
        return f"camera {s}" if isinstance(s, int) or (isinstance(s, str) and s.isdigit()) else f"'{s}'"

    @property
    def shortfall(self):
        if self.announced and self.read < self.announced:
            return (f"Input {self.name}: read {self.read} of the {self.announced} frames its container announces "
                    "(frames stopped decoding: a truncated or damaged file?)")
        return None

    def check_complete(self, output=None):
        """Raise :class:`IncompleteInputError` with :attr:`shortfall` if the frames stopped
        before the count the container announces; ``output`` (the files written for the
        frames read) is named in the message."""
        if self.shortfall:
            written = f"; the output holds the {self.read} frames read: {', '.join(map(str, output[:2]))}" \
                if output else ""
            raise IncompleteInputError(self.shortfall + written)

    def __iter__(self) -> Iterator[Tuple[int, np.ndarray]]:
        source = self.source
        if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
            cap = cv2.VideoCapture(int(source))
            if not cap.isOpened():
                raise OSError(f"Cannot open camera {source}")
            yield from self._read_capture(cap)
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
                self.read = i + 1
                yield i, frame
            return
        if not os.path.exists(source):
            raise FileNotFoundError(f"Video '{source}' does not exist")
        cap = cv2.VideoCapture(source)
        if not cap.isOpened():
            raise OSError(f"Cannot decode video '{source}'")
        self.announced = max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT))) or None
        yield from self._read_capture(cap)

    def _read_capture(self, cap) -> Iterator[Tuple[int, np.ndarray]]:
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                self.read += 1
                yield self.read - 1, frame
        finally:
            cap.release()
        if self.read == 0:
            raise OSError(f"Cannot decode any frame of {self.name}")


def iter_frames(source: Union[str, int]) -> FrameSource:
    """(index, BGR frame) from a video file, a folder of frames or a camera index
    (a :class:`FrameSource`: after the last frame, its ``shortfall`` tells a
    truncated file)."""
    return FrameSource(source)


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

# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Input sizes of the exported graphs, shared by the export, the PyTorch tracker and the runtime."""
from typing import Tuple


def padded_size(height: int, width: int, divisibility: int) -> Tuple[int, int]:
    """The size a (height, width) input is padded to: the next multiple of
    ``divisibility`` (the model's ``size_divisibility``: 64 and the backbone's) on both sides."""
    d = int(divisibility)
    return (int(height) + d - 1) // d * d, (int(width) + d - 1) // d * d


def nonkey_size(height: int, width: int, scale: float) -> Tuple[int, int]:
    """The input size of non-keyframes for VIDEO.NONKEY_SCALE: the size the video
    tracker resizes them to, and the input of the exported non-keyframe graph."""
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))

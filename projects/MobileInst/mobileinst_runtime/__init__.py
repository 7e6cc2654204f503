# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""MobileInst on-device runtime: onnxruntime, numpy, scipy and OpenCV only.

No torch and no detectron2: copy this package and the exported graphs
(``tools/export.py``) to a device and run

    python -m mobileinst_runtime --model-dir exported/ --input clip.mp4 --output out/

It runs the keyframe / non-keyframe graphs with kernel reuse every T frames
and kernel association between keyframes, and writes the same annotated
video and YouTube-VIS json as ``demo.py``.
"""
from .tracking import TrackBook, associate, cosine_cost  # noqa: F401
from .visualize import draw_tracks, masks_to_boxes, to_ytvis_json  # noqa: F401

__all__ = ["TrackBook", "associate", "cosine_cost", "draw_tracks", "masks_to_boxes", "to_ytvis_json",
           "OrtVideoSegmenter", "OrtImageSegmenter"]


def __getattr__(name):  # lazy: onnxruntime is only needed for the segmenters
    if name in ("OrtVideoSegmenter", "OrtImageSegmenter"):
        from . import ort_model

        return getattr(ort_model, name)
    raise AttributeError(name)

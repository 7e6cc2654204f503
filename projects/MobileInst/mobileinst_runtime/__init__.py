# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""MobileInst on-device runtime: the exported graphs on ONNX Runtime.

A leaf: onnxruntime and the numpy core (``mobileinst_core``: numpy, scipy,
OpenCV); no torch and no detectron2. Copy ``mobileinst_core``, this package and
the exported graphs (``tools/export.py``) to a device and run

    python -m mobileinst_runtime --model-dir exported/ --input clip.mp4 --output out/

It runs the keyframe / non-keyframe graphs with kernel reuse every T frames
and kernel association between keyframes (the online tracker of
``mobileinst_core.tracker``, shared with the PyTorch path), and writes the
same annotated video and YouTube-VIS json as ``demo.py``.
"""

__all__ = ["OrtVideoSegmenter", "OrtImageSegmenter"]


def __getattr__(name):  # lazy: importing the package does not load onnxruntime
    if name in __all__:
        from . import ort_model

        return getattr(ort_model, name)
    raise AttributeError(name)

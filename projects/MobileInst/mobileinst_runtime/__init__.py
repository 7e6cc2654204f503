# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""MobileInst on-device runtime: the exported graphs on onnxruntime, OpenVINO or ncnn.

A leaf: the numpy core (``mobileinst_core``: numpy, scipy, OpenCV) and one
backend library, each an optional extra (``pip install mobileinst[onnxruntime]``,
``[openvino]``, ``[ncnn]``); no torch and no detectron2. Copy ``mobileinst_core``,
this package and the exported graphs (``tools/export.py``, ``--ncnn`` for ncnn)
to a device and run

    python -m mobileinst_runtime --model-dir exported/ --input clip.mp4 --output out/ --backend ncnn

It runs the keyframe / non-keyframe graphs with kernel reuse every T frames
and kernel association between keyframes (the online tracker of
``mobileinst_core.online_tracker``, shared with the PyTorch path), and writes the
same annotated video and YouTube-VIS json as ``demo.py``.

* :mod:`.segmenter`: :class:`VideoSegmenter`, :class:`ImageSegmenter`;
* :mod:`.backends`: one graph interface over the backends (``open_graph``);
* :mod:`.ranking`: the scoring / ranking / Matrix NMS of the split ncnn graphs, in numpy.
"""

__all__ = ["VideoSegmenter", "ImageSegmenter"]


def __getattr__(name):  # lazy: importing the package loads no backend library
    if name in __all__:
        from . import segmenter

        return getattr(segmenter, name)
    raise AttributeError(name)

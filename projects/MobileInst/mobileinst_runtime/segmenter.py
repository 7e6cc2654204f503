# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""The exported graphs on a runtime backend (no torch, no detectron2).

:class:`ImageSegmenter` runs the image graph; :class:`VideoSegmenter` is the
online tracker of :mod:`mobileinst_core.online_tracker` driven by the keyframe graph
(run a keyframe) and the mask graphs (masks of the tracked kernels on a frame:
``mask_head`` on the keyframe's X_mask, ``nonkeyframe`` on the other frames,
kernel reuse).

``backend`` (:mod:`mobileinst_runtime.backends`) is ``"onnxruntime"`` (the
``*.onnx`` graphs), ``"openvino"`` (the same files) or ``"ncnn"`` (the
``*.ncnn.*`` graphs of ``tools/export.py --ncnn``, where the ranking the ONNX
graphs hold runs in numpy, :mod:`mobileinst_runtime.ranking`): every graph has
the same inputs and outputs on each, so the segmenters do not depend on it.
"""
from typing import Optional

import os

import numpy as np

from mobileinst_core.export_meta import META_FILE, ExportMeta, read_export_meta
from mobileinst_core.frames import Letterbox, check_frame
from mobileinst_core.masks import paste_masks
from mobileinst_core.online_tracker import Keyframe, OnlineTracker

from .backends import get_backend, open_graph

__all__ = ["ImageSegmenter", "VideoSegmenter"]


class _GraphInput:
    """A fixed-size graph input: the letterbox into it and the pasting of the graph's
    mask probabilities (k, h, w) on its padded grid back to (k, fh, fw) bool frame masks."""

    def __init__(self, meta: ExportMeta, input_size, padded_size):
        self.letterbox = Letterbox(input_size, meta.input_format, meta.pixel_mean)
        self.padded = tuple(padded_size)
        self.threshold = meta.mask_threshold

    def paste(self, mask_probs: np.ndarray, valid, frame_size) -> np.ndarray:
        return paste_masks(mask_probs, self.padded, valid, frame_size, self.threshold)[0]


def _mismatch(model_dir, field, value, graph, what):
    return ValueError(f"'{os.path.join(model_dir, META_FILE)}': field '{field}' is {value} but graph '{graph.name}' "
                      f"({graph.backend}) {what}: export_meta.json and the graphs are of different exports; "
                      "re-export with tools/export.py")


def check_graph_sizes(model_dir: str, meta: ExportMeta, graph, input_size=None, padded_size=None,
                      input_field: str = "input_size"):
    """export_meta.json against what a graph takes: the image input's (height, width)
    against ``input_size``, the mask features' grid against ``padded_size`` (the padded
    size over a power-of-two stride), the class scores against num_classes (where the
    backend knows the output shapes); ``ValueError`` naming the file and the field."""
    shapes = {i.name: list(i.shape) for i in graph.inputs}
    if input_size is not None and "image" in shapes:
        if shapes["image"][-2:] != list(input_size):
            raise _mismatch(model_dir, input_field, list(input_size), graph, f"takes images of {shapes['image'][-2:]}")
    if padded_size is not None and "mask_features" in shapes:
        grid = shapes["mask_features"][-2:]
        if all(isinstance(g, int) and g > 0 for g in grid):
            ratios = {p / g for p, g in zip(padded_size, grid)}
            r = ratios.pop() if len(ratios) == 1 else 0
            if not (r >= 1 and r == int(r) and int(r) & (int(r) - 1) == 0):
                raise _mismatch(model_dir, "padded_size", list(padded_size), graph,
                                f"takes mask features of {grid}, not the padded size over a power-of-two stride")
    cls = graph.output_shapes.get("class_scores")
    if cls and isinstance(cls[-1], int) and cls[-1] != meta.num_classes:
        raise _mismatch(model_dir, "num_classes", meta.num_classes, graph, f"scores {cls[-1]} classes")


class ImageSegmenter:
    """The exported image model: frame -> (scores, classes, masks) at the frame size,
    on ``backend``; ``graph``: the image graph's name (``image_int8`` for the int8 one)."""

    def __init__(self, model_dir: str, threads: int = 0, graph: str = "image", backend: str = "onnxruntime"):
        self.meta = read_export_meta(model_dir)
        self.backend = get_backend(backend).name
        self.graph = open_graph(model_dir, graph, backend, threads)
        check_graph_sizes(model_dir, self.meta, self.graph, self.meta.input_size)
        self.input = _GraphInput(self.meta, self.meta.input_size, self.meta.padded_size)
        self.dtype = self.graph.input_dtype("image")

    def __call__(self, frame_bgr: np.ndarray, score_threshold: float = None):
        """``score_threshold`` defaults to the model's CLS_THRESHOLD."""
        check_frame(frame_bgr, "Image")
        if score_threshold is None:
            score_threshold = self.meta.cls_threshold
        x, valid = self.input.letterbox(frame_bgr)
        scores, classes, mask_probs = self.graph.run(None, {"image": x.astype(self.dtype)})
        keep = scores > score_threshold
        return scores[keep], classes[keep], self.input.paste(mask_probs[keep], valid, frame_bgr.shape[:2])


class VideoSegmenter(OnlineTracker):
    """Online video instance segmentation with kernel reuse (T) and kernel association
    on the exported graphs, on ``backend``; the settings are the export's
    (export_meta.json "video"), ``reuse_interval`` and ``association`` may override
    them. ``suffix`` "_int8": the int8 graphs (onnxruntime, openvino)."""

    def __init__(self, model_dir: str, threads: int = 0, reuse_interval: Optional[int] = None,
                 association: Optional[bool] = None, keep_results: bool = True, suffix: str = "",
                 backend: str = "onnxruntime"):
        self.meta = read_export_meta(model_dir)
        self.backend = get_backend(backend).name
        self.keyframe = open_graph(model_dir, f"keyframe{suffix}", backend, threads)
        self.nonkeyframe = open_graph(model_dir, f"nonkeyframe{suffix}", backend, threads)
        self.mask_head = open_graph(model_dir, f"mask_head{suffix}", backend, threads)
        m = self.meta
        check_graph_sizes(model_dir, m, self.keyframe, m.input_size)
        check_graph_sizes(model_dir, m, self.nonkeyframe, m.nonkey_input_size, input_field="video.nonkey_input_size")
        check_graph_sizes(model_dir, m, self.mask_head, padded_size=m.padded_size)
        self.key_input = _GraphInput(self.meta, self.meta.input_size, self.meta.padded_size)
        # VIDEO.NONKEY_SCALE: non-keyframes enter their graph at a smaller size
        self.nonkey_input = _GraphInput(self.meta, self.meta.nonkey_input_size, self.meta.nonkey_padded_size)
        self.dtype = self.keyframe.input_dtype("image")
        self.class_names = self.meta.class_names
        overrides = {}
        if reuse_interval is not None:  # checked as the export's (an int >= 1)
            overrides["reuse_interval"] = reuse_interval
        if association is not None:
            overrides["association"] = association
        super().__init__(self.meta.tracker.replace(**overrides), self._run_keyframe, self._frame_masks, keep_results)

    def _run_keyframe(self, frame_bgr: np.ndarray) -> Keyframe:
        x, valid = self.key_input.letterbox(frame_bgr)
        kernels, scores, _, class_scores, x_mask = self.keyframe.run(None, {"image": x.astype(self.dtype)})
        return Keyframe(kernels, scores, class_scores, x_mask[0], context=(x_mask, valid))

    def _frame_masks(self, frame_bgr: np.ndarray, kernels: np.ndarray, keyframe):
        kernels = np.ascontiguousarray(kernels, dtype=np.float32)
        if keyframe is not None:  # the keyframe's own X_mask
            (x_mask, valid), graph_input = keyframe, self.key_input
            if len(kernels):
                (probs,) = self.mask_head.run(None, {"mask_features": x_mask, "kernels": kernels})
        else:  # kernel reuse: the frame's X_mask from the non-keyframe graph
            x, valid = self.nonkey_input.letterbox(frame_bgr)
            graph_input = self.nonkey_input
            if len(kernels):
                (probs,) = self.nonkeyframe.run(None, {"image": x.astype(self.dtype), "kernels": kernels})
        if not len(kernels):
            probs = np.zeros((0, 1, 1), np.float32)
        return graph_input.paste(probs, valid, frame_bgr.shape[:2]), None

    def step(self, frame_bgr: np.ndarray) -> dict:
        """One HxWx3 uint8 BGR frame -> {"masks" (k, H, W) bool, "scores", "classes", "track_ids"}."""
        check_frame(frame_bgr, f"Frame {self.frame_index}")
        out = self.track(frame_bgr, frame_bgr.shape[:2])
        return {"masks": out.masks, "scores": out.scores, "classes": out.classes, "track_ids": out.slots}

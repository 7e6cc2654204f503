# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Running the exported graphs with onnxruntime (no torch, no detectron2)."""
import json
import os
from typing import Optional

import cv2
import numpy as np
import onnxruntime as ort

from .frames import check_frame
from .masks import paste_masks
from .tracking import TrackBook, associate

META_FILE = "export_meta.json"


def _session(path: str, threads: int = 0) -> ort.InferenceSession:
    if not os.path.exists(path):
        raise FileNotFoundError(f"Exported graph '{path}' does not exist; run tools/export.py first")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Errors only: at this level ORT's constant folding logs a warning for every folded
    # constant it drops ('Removing initializer ...'), hundreds per graph, none actionable.
    opts.log_severity_level = 3
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


def load_meta(model_dir: str) -> dict:
    path = os.path.join(model_dir, META_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"'{path}' does not exist: '{model_dir}' is not a tools/export.py output folder")
    with open(path) as f:
        return json.load(f)


class _Letterbox:
    """Resize a BGR frame into the graph's fixed input (aspect kept, padded with the pixel mean)."""

    def __init__(self, meta):
        self.h, self.w = meta["input_size"]
        self.rgb = meta["input_format"] == "RGB"
        self.pad_value = np.array(meta["pixel_mean"], np.float32)

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


class _Paster:
    """Graph mask probabilities (k, h, w) on the padded input's mask grid ->
    (k, fh, fw) bool masks at the frame size (:func:`paste_masks`)."""

    def __init__(self, meta):
        if "padded_size" not in meta:
            raise KeyError("export_meta.json has no 'padded_size': re-export the model with tools/export.py")
        self.padded = tuple(meta["padded_size"])
        self.threshold = float(meta["mask_threshold"])

    def __call__(self, mask_probs: np.ndarray, valid, frame_size) -> np.ndarray:
        return paste_masks(mask_probs, self.padded, valid, frame_size, self.threshold)[0]


def _input_dtype(session, name):
    t = next(i.type for i in session.get_inputs() if i.name == name)
    return np.uint8 if "uint8" in t else np.float32


class OrtImageSegmenter:
    """The exported image model: frame -> (scores, classes, masks) at the frame size."""

    def __init__(self, model_dir: str, threads: int = 0, graph: str = "image.onnx"):
        self.meta = load_meta(model_dir)
        self.session = _session(os.path.join(model_dir, graph), threads)
        self.letterbox = _Letterbox(self.meta)
        self.paste = _Paster(self.meta)
        self.dtype = _input_dtype(self.session, "image")

    def __call__(self, frame_bgr: np.ndarray, score_threshold: float = None):
        """``score_threshold`` defaults to the model's CLS_THRESHOLD."""
        check_frame(frame_bgr, "Image")
        if score_threshold is None:
            score_threshold = self.meta.get("cls_threshold", 0.0)
        x, valid = self.letterbox(frame_bgr)
        scores, classes, mask_probs = self.session.run(None, {"image": x.astype(self.dtype)})
        keep = scores > score_threshold
        return scores[keep], classes[keep], self.paste(mask_probs[keep], valid, frame_bgr.shape[:2])


class OrtVideoSegmenter:
    """Online video instance segmentation with kernel reuse (T) and kernel association."""

    def __init__(self, model_dir: str, threads: int = 0, reuse_interval: Optional[int] = None,
                 association: Optional[bool] = None, keep_results: bool = True, suffix: str = ""):
        self.meta = load_meta(model_dir)
        self.keyframe = _session(os.path.join(model_dir, f"keyframe{suffix}.onnx"), threads)
        self.nonkeyframe = _session(os.path.join(model_dir, f"nonkeyframe{suffix}.onnx"), threads)
        self.mask_head = _session(os.path.join(model_dir, f"mask_head{suffix}.onnx"), threads)
        self.letterbox = _Letterbox(self.meta)
        self.paste = _Paster(self.meta)
        self.dtype = _input_dtype(self.keyframe, "image")
        v = self.meta["video"]
        # VIDEO.NONKEY_SCALE: non-keyframes enter their graph at a smaller size
        # (exports without the key take the keyframe's size)
        nonkey = dict(self.meta, input_size=v.get("nonkey_input_size", self.meta["input_size"]),
                      padded_size=v.get("nonkey_padded_size", self.meta.get("padded_size")))
        self.nonkey_letterbox = _Letterbox(nonkey)
        self.nonkey_paste = _Paster(nonkey)
        self.reuse_interval = int(reuse_interval or v["reuse_interval"])
        self.association = v["association"] if association is None else association
        self.track_score_threshold = v["track_score_threshold"]
        self.max_tracks = v["max_tracks"]
        # older exports have no mask term: the paper's cosine association
        self.association_kwargs = {
            "mask_weight": float(v.get("association_mask_weight", 0.0)),
            "score_threshold": float(v.get("association_score_threshold", 0.2)),
            "min_iou": float(v.get("association_min_iou", 0.1)),
            "mask_threshold": float(self.meta["mask_threshold"]),
        }
        self.keep_results = keep_results
        self.class_names = self.meta.get("class_names")
        self.reset()

    def reset(self):
        self.frame_index = 0
        self.frame_size = None
        self.kernels = None
        self.scores = None
        self.book = TrackBook(self.max_tracks, self.keep_results)

    def step(self, frame_bgr: np.ndarray) -> dict:
        """One HxWx3 uint8 BGR frame -> {"masks" (k, H, W) bool, "scores", "classes", "track_ids"}."""
        check_frame(frame_bgr, f"Frame {self.frame_index}")
        size = frame_bgr.shape[:2]
        if self.frame_size is None:
            self.frame_size = size
        elif size != self.frame_size:
            raise ValueError(f"Frame {self.frame_index} is {size[1]}x{size[0]} (WxH) but the stream is "
                             f"{self.frame_size[1]}x{self.frame_size[0]}")
        key = self.frame_index % self.reuse_interval == 0
        x, valid = (self.letterbox if key else self.nonkey_letterbox)(frame_bgr)
        x = x.astype(self.dtype)
        if key:
            kernels, scores, _, class_scores, x_mask = self.keyframe.run(None, {"image": x})
            if self.association and self.kernels is not None:
                perm = associate(self.kernels, kernels, x_mask[0], self.scores, scores, **self.association_kwargs)
                kernels, scores, class_scores = kernels[perm], scores[perm], class_scores[perm]
            self.kernels, self.scores = kernels, scores
            self.book.add_keyframe(class_scores)
        slots = np.nonzero(self.scores > self.track_score_threshold)[0]
        sel = np.ascontiguousarray(self.kernels[slots], dtype=np.float32)
        if len(slots) == 0:
            probs = np.zeros((0, 1, 1), np.float32)
        elif key:
            (probs,) = self.mask_head.run(None, {"mask_features": x_mask, "kernels": sel})
        else:
            (probs,) = self.nonkeyframe.run(None, {"image": x, "kernels": sel})
        masks = (self.paste if key else self.nonkey_paste)(probs, valid, size)
        self.book.add_frame(masks, slots)
        self.frame_index += 1
        classes = self.book.mean_class_scores()[slots].argmax(-1) if len(slots) else np.zeros(0, np.int64)
        return {"masks": masks, "scores": self.scores[slots], "classes": classes, "track_ids": slots}

    def ytvis_result(self, video_id=None) -> dict:
        return self.book.ytvis_result(video_id)

# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Export wrappers: plain-tensor modules for ONNX and TorchScript (fixed input size).

All pre- and post-processing a runtime needs is inside the graphs
(normalisation, padding, scores, ranking, mask rescoring), except the kernel
association between keyframes and the pasting of masks into the frame:

* :class:`ImageModel`: image (1, 3, H, W) uint8/float in the config's
  channel order -> scores (K,), classes (K,), mask_probs (K, h, w), the
  top K = MAX_DETECTIONS queries sorted by score (a runtime keeps
  ``scores > CLS_THRESHOLD``, given in export_meta.json).
* :class:`KeyframeModel`: image -> kernels K (N, D), scores (N,), classes (N,),
  class_scores (N, C) and mask features X_mask (1, D, h/2, w/2).
* :class:`MaskHead`: (X_mask, kernels (k, D)) -> mask_probs (k, h, w).
* :class:`NonKeyframeModel`: (image, kernels (k, D)) -> mask_probs (k, h, w):
  kernel reuse, the instance decoder is not in this graph. With
  VIDEO.NONKEY_SCALE < 1 its input is the frame at that scale
  (:func:`mobileinst_core.sizes.nonkey_size`; export_meta.json's video.nonkey_input_size).

:func:`build_export_meta` gives export_meta.json (:mod:`mobileinst_core.export_meta`)
from the config: the input, the thresholds and the video settings a runtime needs.

``mask_probs`` are sigmoid(K . X_mask) on the mask grid of the padded input
((h, w) = padded size / 4, the stride of the mask logits). A runtime pastes them into the
frame with :func:`mobileinst_core.masks.paste_masks`, the function the
PyTorch post-processing uses: one bilinear resize per mask straight to the
frame size, then the MASK_THRESHOLD. Only the runtime knows the frame size,
and ONNX Runtime's Resize/Slice over K full-size masks cost more than the
whole network (TopFormer-base at 640x853: 228 ms against 113 ms, 1 thread).

The number of kernels k given to the mask graphs may vary at run time.
"""
import torch
import torch.nn.functional as F
from detectron2.data import MetadataCatalog
from mobileinst_core import sizes
from mobileinst_core.categories import dataset_category_ids
from mobileinst_core.export_meta import ExportMeta
from mobileinst_core.sizes import nonkey_size
from torch import nn

from ..config import build_tracker_settings
from ..postprocess import rank_detections
from ..video.keyframe import keyframe_scores


def padded_size(model, height: int, width: int):
    """The size the graphs pad a (height, width) input to."""
    return sizes.padded_size(height, width, model.size_divisibility)


class _Base(nn.Module):
    def __init__(self, model, height: int, width: int):
        super().__init__()
        self.model = model.eval()
        self.height, self.width = int(height), int(width)
        self.padded = padded_size(model, self.height, self.width)
        self.mask_threshold = float(model.mask_threshold)
        # The wrapper too: torch.onnx.export restores the wrapper's mode on the whole
        # tree afterwards, which would leave drop path (DROP_PATH_RATE > 0) active in
        # the parity check and the TorchScript trace that follow.
        self.eval()

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        x = (image.float() - self.model.pixel_mean) / self.model.pixel_std
        ph, pw = self.padded
        return F.pad(x, (0, pw - self.width, 0, ph - self.height))

    def mask_probs(self, kernels: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
        """(k, D), (1, D, h, w) -> (k, h', w') mask probabilities on the mask grid."""
        return self.model.mask_logits(kernels[None], x_mask)[0].sigmoid()


class ImageModel(_Base):
    def __init__(self, model, height, width):
        super().__init__(model, height, width)
        self.max_detections = int(model.max_detections)
        self.cls_threshold = float(model.cls_threshold)

    def forward(self, image):
        out = self.model.predict(self.normalize(image))
        mask_probs = out["pred_masks"][0].sigmoid()
        # the ranking of the PyTorch post-processing (MULTI_CLASS, INFERENCE.NMS_SIGMA); the runtime
        # keeps scores > CLS_THRESHOLD
        scores, queries, classes = rank_detections(out["pred_logits"][0], out["pred_objectness"][0], mask_probs,
                                                   self.mask_threshold, self.max_detections, self.model.multi_class,
                                                   self.model.nms_sigma)
        return scores, classes, mask_probs[queries]


class KeyframeModel(_Base):
    def forward(self, image):
        x6, x_mask = self.model.encode(self.normalize(image))
        out = self.model.instance_decoder(x6, x_mask)
        scores, classes, per_class = keyframe_scores(self.model, out, x_mask)
        return out["pred_kernels"][0], scores, classes, per_class, x_mask


class MaskHead(_Base):
    def forward(self, x_mask, kernels):
        return self.mask_probs(kernels, x_mask)


class NonKeyframeModel(_Base):
    def forward(self, image, kernels):
        _, x_mask = self.model.encode(self.normalize(image))
        return self.mask_probs(kernels, x_mask)


def example_inputs(model, height: int, width: int):
    image = torch.randint(0, 255, (1, 3, height, width), dtype=torch.uint8)
    d = model.mask_decoder.kernel_dim
    ph, pw = padded_size(model, height, width)
    x_mask = torch.randn(1, d, ph // model.mask_stride, pw // model.mask_stride)
    kernels = torch.randn(min(4, model.instance_decoder.num_queries), d)
    return image, x_mask, kernels


GRAPHS = ("image", "keyframe", "mask_head", "nonkeyframe")


def build_graph_modules(model, height: int, width: int, nonkey_scale: float = 1.0):
    """name -> (module, example inputs, input names, output names, dynamic axes).

    The non-keyframe graph takes the input at ``nonkey_scale`` (VIDEO.NONKEY_SCALE)."""
    image, x_mask, kernels = example_inputs(model, height, width)
    nh, nw = nonkey_size(height, width, nonkey_scale)
    nonkey_image = example_inputs(model, nh, nw)[0]
    dyn_k = {"kernels": {0: "k"}, "mask_probs": {0: "k"}}
    return {
        "image": (ImageModel(model, height, width), (image,), ["image"], ["scores", "classes", "mask_probs"], None),
        "keyframe": (KeyframeModel(model, height, width), (image,), ["image"],
                     ["kernels", "scores", "classes", "class_scores", "mask_features"], None),
        "mask_head": (MaskHead(model, height, width), (x_mask, kernels), ["mask_features", "kernels"], ["mask_probs"],
                      dyn_k),
        "nonkeyframe": (NonKeyframeModel(model, nh, nw), (nonkey_image, kernels), ["image", "kernels"],
                        ["mask_probs"], dyn_k),
    }


def build_export_meta(cfg, model, height: int, width: int) -> ExportMeta:
    """export_meta.json of the graphs of ``model`` at (height, width), from ``cfg``:
    the classes and category ids of DATASETS.TEST[0] (if any), the inference
    settings (thresholds; MAX_DETECTIONS, MULTI_CLASS, NMS_SIGMA of the ranking) and the video
    settings (:func:`mobileinst.config.build_tracker_settings`)."""
    settings = build_tracker_settings(cfg)
    nh, nw = nonkey_size(height, width, settings.nonkey_scale)
    meta = MetadataCatalog.get(cfg.DATASETS.TEST[0]) if cfg.DATASETS.TEST else None
    return ExportMeta(
        input_size=(int(height), int(width)),
        padded_size=padded_size(model, height, width),
        input_format=cfg.INPUT.FORMAT,
        pixel_mean=tuple(cfg.MODEL.PIXEL_MEAN),
        pixel_std=tuple(cfg.MODEL.PIXEL_STD),
        num_classes=cfg.MODEL.MOBILEINST.NUM_CLASSES,
        num_queries=cfg.MODEL.MOBILEINST.INSTANCE_DECODER.NUM_QUERIES,
        class_names=meta.get("thing_classes", None) if meta is not None else None,
        category_ids=dataset_category_ids(meta.get("thing_dataset_id_to_contiguous_id", None)) if meta is not None
        else None,
        cls_threshold=cfg.MODEL.MOBILEINST.INFERENCE.CLS_THRESHOLD,
        max_detections=cfg.MODEL.MOBILEINST.INFERENCE.MAX_DETECTIONS,
        multi_class=cfg.MODEL.MOBILEINST.INFERENCE.MULTI_CLASS,
        nms_sigma=cfg.MODEL.MOBILEINST.INFERENCE.NMS_SIGMA,
        tracker=settings,
        nonkey_input_size=(nh, nw),
        nonkey_padded_size=padded_size(model, nh, nw),
        weights=cfg.MODEL.WEIGHTS,
    )

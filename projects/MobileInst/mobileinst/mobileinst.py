# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""The MobileInst meta-architecture (paper Fig. 3).

    image -> backbone -> X3, X4, X5 (local), X6 (global; IN_FEATURES and
             GLOBAL_FEATURE name them, or X6 = avgpool(X5) for a backbone
             without a global branch, ``mobileinst.features``)
          -> semantic-enhanced mask decoder -> X_mask (1/8; 1/4 with
             MASK_DECODER.OUTPUT_STRIDE 4, which also reads the stride-4 X2)
          -> dual instance decoder (Q -> Q_G on X6 -> on X_L) -> cls, obj, K
          -> masks M = K . X_mask

Inputs follow detectron2: a list of dicts with "image" (C, H, W) and, for
training, "instances". A video input has "image" as a list of frames: for
training a pair (t, t+d) with "instances" a list of two, trained with
temporal query passing; for inference a whole clip, segmented and tracked
online with kernel reuse and kernel association (``mobileinst.video``).

Training runs the networks (:meth:`MobileInst.training_outputs`) and hands
their outputs and the targets to the criterion
(:class:`mobileinst.criterion.SetCriterion`), which computes every loss.
"""
import inspect
import logging
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.structures import BitMasks, ImageList, PolygonMasks
from torch import nn

from mobileinst_core.tracker import TrackerSettings

from .config import build_tracker_settings
from .criterion import SetCriterion
from .features import build_global_feature, global_feature_key
from .instance_decoder import DualInstanceDecoder
from .mask_decoder import SemanticEnhancedMaskDecoder
from .postprocess import class_scores, decay_duplicates, postprocess_instances, score_queries
from .utils.pretrained import backbone_build_cfg

logger = logging.getLogger(__name__)


@META_ARCH_REGISTRY.register()
class MobileInst(nn.Module):
    @configurable
    def __init__(self, *, backbone: nn.Module, mask_decoder: nn.Module, instance_decoder: nn.Module,
                 criterion: nn.Module, pixel_mean, pixel_std, size_divisibility: int = 64,
                 mask_upsample: int = 2, cls_threshold: float, mask_threshold: float,
                 max_detections: int, query_passing: bool = False, supervise_key_frame: bool = True,
                 deep_supervision: bool = False, multi_class: bool = False, nms_sigma: float = 0.0,
                 channels_last: bool = False, tracker_settings: Optional[TrackerSettings] = None,
                 global_feature: str = "x6",
                 global_pool: Optional[nn.Module] = None):
        """
        Args:
            tracker_settings: the video settings of :meth:`inference_video`
                (:func:`mobileinst.config.build_tracker_settings`).
            global_feature: the key of X6 in the features the decoders read.
            global_pool: a module that derives X6 from the backbone's features
                (:class:`mobileinst.features.PooledGlobalFeature`), or None when
                the backbone gives X6 itself.
        """
        super().__init__()
        self.backbone = backbone
        self.mask_decoder = mask_decoder
        self.instance_decoder = instance_decoder
        self.criterion = criterion
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.size_divisibility = max(int(size_divisibility), getattr(backbone, "size_divisibility", 0))
        self.mask_upsample = int(mask_upsample)
        # stride of X_mask (a mask decoder without ``output_stride`` is the paper's 1/8)
        self.mask_stride = int(getattr(mask_decoder, "output_stride", 8))
        if self.mask_upsample < 1 or self.mask_stride % self.mask_upsample:
            raise ValueError(
                f"MODEL.MOBILEINST.DECODER.MASK_UPSAMPLE={mask_upsample}: expected a divisor of the stride "
                f"of X_mask (MASK_DECODER.OUTPUT_STRIDE={self.mask_stride})"
            )
        self.cls_threshold = cls_threshold
        self.mask_threshold = mask_threshold
        self.max_detections = max_detections
        self.query_passing = query_passing
        self.supervise_key_frame = supervise_key_frame
        self.deep_supervision = deep_supervision
        self.multi_class = multi_class
        self.nms_sigma = float(nms_sigma)
        self.tracker_settings = tracker_settings
        self.global_feature = global_feature
        self.global_pool = global_pool
        # the backbone computes X6 and can take a given one instead (TopFormer, MobileNetV2)
        self.backbone_takes_x6 = global_pool is None and "x6" in inspect.signature(backbone.forward).parameters
        if tracker_settings is not None and tracker_settings.reuse_global_features and not self.backbone_takes_x6:
            logger.warning(f"MODEL.MOBILEINST.VIDEO.REUSE_GLOBAL_FEATURES: {type(backbone).__name__} cannot take "
                           f"a given X6 ({'derived' if global_pool is not None else 'no x6 argument'}), so it runs "
                           "whole on non-keyframes; the decoders get the keyframe's X6 and no time is saved")
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    @classmethod
    def from_config(cls, cfg):
        # the backbone's ImageNet file is read only when MODEL.WEIGHTS is empty
        backbone = build_backbone(backbone_build_cfg(cfg))
        shapes = backbone.output_shape()
        c = cfg.MODEL.MOBILEINST
        global_pool = build_global_feature(cfg, shapes)
        key = global_feature_key(cfg)
        if global_pool is not None:
            shapes = {**shapes, key: global_pool.output_shape()}
        return {
            "backbone": backbone,
            "global_feature": key,
            "global_pool": global_pool,
            "mask_decoder": SemanticEnhancedMaskDecoder(cfg, shapes),
            "instance_decoder": DualInstanceDecoder(cfg, shapes),
            "criterion": SetCriterion(cfg),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "size_divisibility": c.SIZE_DIVISIBILITY,
            "mask_upsample": c.DECODER.MASK_UPSAMPLE,
            "cls_threshold": c.INFERENCE.CLS_THRESHOLD,
            "mask_threshold": c.INFERENCE.MASK_THRESHOLD,
            "max_detections": c.INFERENCE.MAX_DETECTIONS,
            "multi_class": c.INFERENCE.MULTI_CLASS,
            "nms_sigma": c.INFERENCE.NMS_SIGMA,
            "channels_last": c.CHANNELS_LAST,
            "query_passing": c.VIDEO.QUERY_PASSING,
            "supervise_key_frame": c.VIDEO.SUPERVISE_KEY_FRAME,
            "deep_supervision": c.DECODER.DEEP_SUPERVISION,
            "tracker_settings": build_tracker_settings(cfg),
        }

    @property
    def device(self):
        return self.pixel_mean.device

    # ------------------------------------------------------------------ parts
    def preprocess(self, images: List[torch.Tensor]) -> ImageList:
        images = [(x.to(self.device) - self.pixel_mean) / self.pixel_std for x in images]
        images = ImageList.from_tensors(images, self.size_divisibility)
        if self.channels_last:
            images.tensor = images.tensor.contiguous(memory_format=torch.channels_last)
        return images

    def encode(self, images: torch.Tensor, x6: Optional[torch.Tensor] = None):
        """Backbone + mask decoder: normalised, padded images -> (X6, X_mask).

        With ``x6`` given (a keyframe's global features) it replaces this
        frame's X6. A backbone that takes it (``backbone_takes_x6``) skips its
        global transformer and injects it into X3..X5; any other backbone, and
        a derived X6, run as usual and only the decoders see the given X6.
        """
        if x6 is not None and self.backbone_takes_x6:
            features = self.backbone(images, x6=x6)
        else:
            features = self.backbone(images)
            if x6 is not None:
                features = {**features, self.global_feature: x6}
            elif self.global_pool is not None:
                features = {**features, self.global_feature: self.global_pool(features)}
        return features[self.global_feature], self.mask_decoder(features)

    def mask_logits(self, kernels: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
        """M = K . X_mask, upsampled by MASK_UPSAMPLE: (B, N, D), (B, D, h, w) -> (B, N, h', w')."""
        masks = torch.einsum("bnd,bdhw->bnhw", kernels, x_mask)
        if self.mask_upsample != 1:
            masks = F.interpolate(masks, scale_factor=float(self.mask_upsample), mode="bilinear",
                                  align_corners=False)
        return masks

    def keyframe_scores(self, out: Dict[str, torch.Tensor], x_mask: torch.Tensor):
        """Per query of one frame: (scores (N,), classes (N,), class scores (N, C)).

        With INFERENCE.NMS_SIGMA > 0 the scores and class scores of same-class
        duplicate masks are decayed by Matrix NMS (masks on the mask grid), so
        that duplicates of one object do not become tracks of their own.
        Used by the video tracker and the exported keyframe graph.
        """
        logits, objectness = out["pred_logits"][0], out["pred_objectness"][0]
        scores, classes = score_queries(logits, objectness)
        per_class = class_scores(logits, objectness)
        if self.nms_sigma > 0:
            probs = self.mask_logits(out["pred_kernels"][:1], x_mask[:1])[0].sigmoid()
            order = scores.argsort(descending=True)
            decayed, resort = decay_duplicates(scores[order], classes[order], probs[order], self.mask_threshold,
                                               self.nms_sigma)
            order = order[resort]
            factor = torch.zeros_like(scores).scatter(0, order, decayed / scores[order].clamp(min=1e-12))
            scores, per_class = scores * factor, per_class * factor[:, None]
        return scores, classes, per_class

    def predict(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Full image model on a padded, normalised batch (the exportable core)."""
        x6, x_mask = self.encode(images)
        out = self.instance_decoder(x6, x_mask)
        out["pred_masks"] = self.mask_logits(out["pred_kernels"], x_mask)
        out["mask_features"] = x_mask
        return out

    # --------------------------------------------------------------- forward
    def forward(self, batched_inputs: List[dict]):
        if self.training:
            return self.losses(batched_inputs)
        if batched_inputs and not isinstance(batched_inputs[0]["image"], torch.Tensor):
            return [self.inference_video(x) for x in batched_inputs]
        return self.inference(batched_inputs)

    def prepare_targets(self, instances_list, padded_size) -> List[dict]:
        """GT masks padded to ``padded_size`` and area-pooled to the mask-logit grid."""
        stride = self.mask_stride // self.mask_upsample
        ph, pw = padded_size
        targets = []
        for inst in instances_list:
            inst = inst.to(self.device)
            h, w = inst.image_size
            masks = inst.gt_masks if inst.has("gt_masks") else None
            if isinstance(masks, PolygonMasks):
                masks = BitMasks.from_polygon_masks(masks, h, w)
            if masks is None:
                t = torch.zeros((0, h, w), dtype=torch.float32, device=self.device)
            else:
                t = masks.tensor.float() if isinstance(masks, BitMasks) else masks.float()
            padded = t.new_zeros((t.shape[0], ph, pw))
            padded[:, : t.shape[1], : t.shape[2]] = t
            if stride > 1 and padded.shape[0]:
                padded = F.avg_pool2d(padded[:, None], stride, stride)[:, 0]
            elif stride > 1:
                padded = padded.new_zeros((0, ph // stride, pw // stride))
            targets.append({"labels": inst.gt_classes.long(), "masks": padded})
        return targets

    def _with_masks(self, outputs, x_mask):
        """``outputs`` with "pred_masks" = K . X_mask."""
        return dict(outputs, pred_masks=self.mask_logits(outputs["pred_kernels"], x_mask))

    def losses(self, batched_inputs: List[dict]) -> Dict[str, torch.Tensor]:
        """Images, or frame pairs (t, t+d) stacked as the frames t then t+d:
        the networks' outputs and the targets go to the criterion."""
        pairs = 0 if isinstance(batched_inputs[0]["image"], torch.Tensor) else len(batched_inputs)
        if pairs:
            frames = [x["image"][0] for x in batched_inputs] + [x["image"][1] for x in batched_inputs]
            insts = [x["instances"][0] for x in batched_inputs] + [x["instances"][1] for x in batched_inputs]
        else:
            frames = [x["image"] for x in batched_inputs]
            insts = [x["instances"] for x in batched_inputs]
        images = self.preprocess(frames)
        targets = self.prepare_targets(insts, images.tensor.shape[-2:])
        x6, x_mask = self.encode(images.tensor)
        outputs = self.training_outputs(x6, x_mask, pairs if self.query_passing else 0)
        return self.criterion(outputs, targets, self.instance_decoder.pooled_class_head)

    def training_outputs(self, x6: torch.Tensor, x_mask: torch.Tensor, pairs: int = 0) -> Dict[str, torch.Tensor]:
        """The outputs the criterion supervises (:meth:`SetCriterion.forward`):
        the instance predictions with their masks, the global stage's
        ("global_outputs", DECODER.DEEP_SUPERVISION) and X_mask ("mask_features").

        ``pairs`` > 0: temporal query passing as in the paper on the frames t
        ([:pairs]) and t+d ([pairs:]) of that many pairs. Frame t+d runs the
        whole model and is supervised as an image (all losses, its own matching
        M^{t+d}). Frame t's global-stage queries Q_G^t go through frame t+d's
        local stage (on its X_L) and, with frame t+d's X_mask, give masks
        ("passed_outputs") that the criterion supervises under the same
        assignment M^{t+d} by L_mask alone. With SUPERVISE_KEY_FRAME, frame t
        is supervised as an image too (matched with frame t+d in one batch,
        each image on its own).
        """
        dec = self.instance_decoder
        size = x6.shape[-2:]
        q_global = dec.forward_global(x6)
        own = slice(pairs if pairs and not self.supervise_key_frame else 0, None)
        outputs = self._with_masks(dec.forward_local(q_global[own], x_mask[own], size), x_mask[own])
        if self.deep_supervision:
            # the global stage's queries through the shared heads, matched on their own
            outputs["global_outputs"] = self._with_masks(dec.predict_heads(q_global[own]), x_mask[own])
        if pairs:
            passed = dec.forward_local(q_global[:pairs], x_mask[pairs:], size)
            outputs["passed_outputs"] = self._with_masks(passed, x_mask[pairs:])
        outputs["mask_features"] = x_mask
        return outputs

    # ------------------------------------------------------------- inference
    def inference(self, batched_inputs: List[dict]) -> List[dict]:
        images = self.preprocess([x["image"] for x in batched_inputs])
        out = self.predict(images.tensor)
        results = []
        for i, (x, image_size) in enumerate(zip(batched_inputs, images.image_sizes)):
            height = x.get("height", image_size[0])
            width = x.get("width", image_size[1])
            inst = postprocess_instances(
                out["pred_logits"][i], out["pred_objectness"][i], out["pred_masks"][i],
                images.tensor.shape[-2:], image_size, (height, width),
                self.cls_threshold, self.mask_threshold, self.max_detections, self.multi_class,
                self.nms_sigma,
            )
            results.append({"instances": inst})
        return results

    def inference_video(self, video: dict) -> dict:
        """Online inference on one clip: see :class:`mobileinst.video.VideoTracker`."""
        from .video.tracker import VideoTracker

        tracker = VideoTracker.from_model(self, output_size=(video.get("height"), video.get("width")))
        for frame in video["image"]:
            tracker.step(frame)
        return tracker.ytvis_result(video.get("video_id"))

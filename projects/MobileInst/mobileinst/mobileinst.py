# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""The MobileInst meta-architecture for images (paper Fig. 3).

    image -> backbone -> X3, X4, X5 (local), X6 (global; IN_FEATURES and
             GLOBAL_FEATURE name them, or X6 = avgpool(X5) for a backbone
             without a global branch, ``mobileinst.features``)
          -> mask decoder (MASK_DECODER_REGISTRY; the paper's semantic-enhanced
             one) -> X_mask
          -> instance decoder (INSTANCE_DECODER_REGISTRY; the paper's dual one:
             Q -> Q_G on X6 -> on X_L) -> cls, obj, K
          -> masks M = K . X_mask, upsampled to 1/4

Inputs follow detectron2: a list of dicts with "image" (C, H, W) and, for
training, "instances". Training runs the networks
(:meth:`MobileInst.training_outputs`) and hands their outputs and the targets
to the criterion (:class:`mobileinst.criterion.SetCriterion`), which computes
every loss. Video (frame pairs with temporal query passing, clips with kernel
reuse and association) is the meta-architecture ``MobileInstVideo``
(:mod:`mobileinst.video`), built on this one.
"""
import math
from typing import Dict, List

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.structures import BitMasks, ImageList, PolygonMasks
from torch import nn

from .criterion import SetCriterion
from .features import GLOBAL_STRIDE, build_global_feature, global_feature_key
from .instance_decoder import build_instance_decoder
from .mask_decoder import build_mask_decoder
from .postprocess import postprocess_instances
from .utils.pretrained import backbone_build_cfg

# The stride of the mask logits M: X_mask upsampled to it (SparseInst's 2x of a
# stride-8 X_mask; a stride-4 X_mask as it is).
MASK_LOGIT_STRIDE = 4


@META_ARCH_REGISTRY.register()
class MobileInst(nn.Module):
    @configurable
    def __init__(self, *, backbone: nn.Module, global_feature: str, global_pool, mask_decoder: nn.Module,
                 instance_decoder: nn.Module, criterion: nn.Module, pixel_mean, pixel_std, cls_threshold: float,
                 mask_threshold: float, max_detections: int, multi_class: bool, nms_sigma: float):
        """
        Args:
            global_feature: the key of X6 in the features the decoders read.
            global_pool: a module that derives X6 from the backbone's features
                (:class:`mobileinst.features.PooledGlobalFeature`), or None when
                the backbone gives X6 itself.
            mask_decoder, instance_decoder: the heads (their registries'
                ``build_*`` functions build them by config).

        Inputs are padded to a multiple of 64 (and of the backbone's
        ``size_divisibility``): X_mask is then an exact multiple of X6 and the
        pool to X_L a fixed window (exportable). Weights and the input batch
        are kept in NHWC memory (``torch.channels_last``): the same function,
        about 35% less backbone time on one CPU core.
        """
        super().__init__()
        self.backbone = backbone
        self.global_feature = global_feature
        self.global_pool = global_pool
        self.mask_decoder = mask_decoder
        self.instance_decoder = instance_decoder
        self.criterion = criterion
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.size_divisibility = math.lcm(GLOBAL_STRIDE, int(getattr(backbone, "size_divisibility", 0) or 1))
        self.mask_stride = int(mask_decoder.output_stride)  # stride of X_mask
        self.mask_upsample = max(1, self.mask_stride // MASK_LOGIT_STRIDE)
        self.cls_threshold = cls_threshold
        self.mask_threshold = mask_threshold
        self.max_detections = max_detections
        self.multi_class = multi_class
        self.nms_sigma = float(nms_sigma)
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
        mask_decoder = build_mask_decoder(cfg, shapes)
        mask_shape = ShapeSpec(channels=mask_decoder.kernel_dim, stride=mask_decoder.output_stride)
        return {
            "backbone": backbone,
            "global_feature": key,
            "global_pool": global_pool,
            "mask_decoder": mask_decoder,
            "instance_decoder": build_instance_decoder(cfg, shapes, mask_shape),
            "criterion": SetCriterion(cfg),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "cls_threshold": c.INFERENCE.CLS_THRESHOLD,
            "mask_threshold": c.INFERENCE.MASK_THRESHOLD,
            "max_detections": c.INFERENCE.MAX_DETECTIONS,
            "multi_class": c.INFERENCE.MULTI_CLASS,
            "nms_sigma": c.INFERENCE.NMS_SIGMA,
        }

    @property
    def device(self):
        return self.pixel_mean.device

    # ------------------------------------------------------------------ parts
    def preprocess(self, images: List[torch.Tensor]) -> ImageList:
        images = [(x.to(self.device) - self.pixel_mean) / self.pixel_std for x in images]
        images = ImageList.from_tensors(images, self.size_divisibility)
        images.tensor = images.tensor.contiguous(memory_format=torch.channels_last)
        return images

    def encode(self, images: torch.Tensor):
        """Backbone + mask decoder: normalised, padded images -> (X6, X_mask)."""
        features = self.backbone(images)
        if self.global_pool is not None:
            features = {**features, self.global_feature: self.global_pool(features)}
        return features[self.global_feature], self.mask_decoder(features)

    def mask_logits(self, kernels: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
        """M = K . X_mask, upsampled to stride 4: (B, N, D), (B, D, h, w) -> (B, N, h', w')."""
        masks = torch.einsum("bnd,bdhw->bnhw", kernels, x_mask)
        if self.mask_upsample != 1:
            masks = F.interpolate(masks, scale_factor=float(self.mask_upsample), mode="bilinear",
                                  align_corners=False)
        return masks

    def predict(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Full image model on a padded, normalised batch (the exportable core)."""
        x6, x_mask = self.encode(images)
        out = self.instance_decoder(x6, x_mask)
        out["pred_masks"] = self.mask_logits(out["pred_kernels"], x_mask)
        out["mask_features"] = x_mask
        return out

    # --------------------------------------------------------------- forward
    def forward(self, batched_inputs: List[dict]):
        if batched_inputs and not isinstance(batched_inputs[0]["image"], torch.Tensor):
            raise ValueError("MobileInst takes images ('image' a (C, H, W) tensor); frame pairs and clips are for "
                             "MODEL.META_ARCHITECTURE 'MobileInstVideo'")
        if self.training:
            return self.losses(batched_inputs)
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

    def with_masks(self, outputs: Dict[str, torch.Tensor], x_mask: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``outputs`` with "pred_masks" = K . X_mask."""
        return dict(outputs, pred_masks=self.mask_logits(outputs["pred_kernels"], x_mask))

    def criterion_losses(self, outputs: Dict[str, torch.Tensor], targets: List[dict]) -> Dict[str, torch.Tensor]:
        """The criterion on ``outputs``; it trains the instance decoder's pooled class head
        (``PooledClassDualInstanceDecoder``) on the ground-truth masks too."""
        return self.criterion(outputs, targets, getattr(self.instance_decoder, "pooled_class_head", None))

    def losses(self, batched_inputs: List[dict]) -> Dict[str, torch.Tensor]:
        """Images: the networks' outputs and the targets go to the criterion."""
        images = self.preprocess([x["image"] for x in batched_inputs])
        targets = self.prepare_targets([x["instances"] for x in batched_inputs], images.tensor.shape[-2:])
        x6, x_mask = self.encode(images.tensor)
        return self.criterion_losses(self.training_outputs(x6, x_mask), targets)

    def training_outputs(self, x6: torch.Tensor, x_mask: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The outputs the criterion supervises (:meth:`SetCriterion.forward`): the
        instance predictions with their masks, and X_mask ("mask_features")."""
        outputs = self.with_masks(self.instance_decoder(x6, x_mask), x_mask)
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

# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Training loss: L = w_cls * L_cls + w_dice * L_dice + w_pix * L_bce + w_obj * L_obj.

* L_cls: sigmoid focal loss over all N queries (unmatched ones are negatives).
* L_mask = dice + pixel-wise BCE on the matched queries.
* L_obj: BCE between the objectness logit and the IoU of the matched query's
  binarised mask with its target (IoU-aware objectness).

Sums are normalised by the number of target instances (averaged over all
processes), as in DETR and SparseInst.

``SetCriterion(outputs, targets)`` matches and returns all four losses; it can
also return the assignment M it used, and supervise other outputs under a given
M by L_mask alone (the passed branch of temporal query passing, which shares
frame t+d's M^{t+d}).
"""
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.utils import comm
from fvcore.nn import sigmoid_focal_loss
from torch import nn

from .matcher import HungarianMatcher, batch_indices

# per image (query indices, target indices): an assignment M of queries to targets
Indices = List[Tuple[torch.Tensor, torch.Tensor]]


def dice_loss(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over rows of 1 - dice; ``inputs`` are logits, rows are instances."""
    inputs = inputs.sigmoid().flatten(1)
    targets = targets.flatten(1)
    numerator = 2 * (inputs * targets).sum(1)
    denominator = (inputs * inputs).sum(1) + (targets * targets).sum(1)
    return (1 - (numerator + 1e-4) / (denominator + 1e-4)).sum()


@torch.no_grad()
def mask_iou(pred_logits: torch.Tensor, targets: torch.Tensor, threshold: float = 0.4) -> torch.Tensor:
    """IoU of binarised predictions (sigmoid > threshold) with targets (> 0.5), per row."""
    pred = (pred_logits.sigmoid() > threshold).flatten(1).float()
    tgt = (targets > 0.5).flatten(1).float()
    inter = (pred * tgt).sum(1)
    union = pred.sum(1) + tgt.sum(1) - inter
    return inter / union.clamp(min=1.0)


class SetCriterion(nn.Module):
    @configurable
    def __init__(self, *, num_classes: int, matcher: HungarianMatcher, class_weight: float,
                 dice_weight: float, pixel_weight: float, objectness_weight: float,
                 focal_alpha: float = 0.25, focal_gamma: float = 2.0, iou_threshold: float = 0.4):
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weights = {
            "loss_cls": class_weight,
            "loss_dice": dice_weight,
            "loss_mask": pixel_weight,
            "loss_objectness": objectness_weight,
        }
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.iou_threshold = iou_threshold

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.MOBILEINST
        return {
            "num_classes": c.NUM_CLASSES,
            "matcher": HungarianMatcher(c.MATCHER.ALPHA, c.MATCHER.BETA),
            "class_weight": c.LOSS.CLASS_WEIGHT,
            "dice_weight": c.LOSS.MASK_DICE_WEIGHT,
            "pixel_weight": c.LOSS.MASK_PIXEL_WEIGHT,
            "objectness_weight": c.LOSS.OBJECTNESS_WEIGHT,
            "focal_alpha": c.LOSS.FOCAL_ALPHA,
            "focal_gamma": c.LOSS.FOCAL_GAMMA,
            "iou_threshold": c.LOSS.IOU_MASK_THRESHOLD,
        }

    def forward(self, outputs: Dict[str, torch.Tensor], targets: List[dict], indices: Optional[Indices] = None,
                mask_only: bool = False, return_indices: bool = False):
        """
        Args:
            outputs: "pred_logits" (B, N, C), "pred_objectness" (B, N),
                "pred_masks" (B, N, h, w) mask logits ("pred_masks" alone with
                ``mask_only`` and ``indices``).
            targets: per image {"labels": (M,), "masks": (M, h, w) in [0, 1]}
                at the resolution of "pred_masks".
            indices: an assignment M of queries to targets, per image (query
                indices, target indices), to use instead of matching these outputs
                (the passed branch of temporal query passing shares frame t+d's M^{t+d}).
            mask_only: L_mask alone (loss_dice and loss_mask), no class or
                objectness term.
            return_indices: also return the assignment used.
        Returns:
            weighted losses: loss_cls, loss_dice, loss_mask, loss_objectness (or
            the two of L_mask); with ``return_indices``, (losses, M).
        """
        terms = ("loss_dice", "loss_mask") if mask_only else tuple(self.weights)
        # Matching and losses in float32, also under mixed precision
        # (SOLVER.AMP.ENABLED): sums over the pixels of a mask overflow float16.
        with torch.autocast(device_type=outputs["pred_masks"].device.type, enabled=False):
            outputs = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in outputs.items()}
            if indices is None:
                indices = self.matcher(outputs["pred_logits"], outputs["pred_masks"], targets)
            losses = {k: v * self.weights[k] for k, v in self._losses(outputs, targets, indices, terms).items()}
        return (losses, indices) if return_indices else losses

    def _losses(self, outputs: Dict[str, torch.Tensor], targets: List[dict], indices: Indices,
                terms) -> Dict[str, torch.Tensor]:
        """The unweighted losses named in ``terms`` under the assignment ``indices``."""
        masks = outputs["pred_masks"]
        num_instances = sum(len(t["labels"]) for t in targets)
        num = torch.as_tensor([float(num_instances)], device=masks.device)
        if comm.get_world_size() > 1:
            torch.distributed.all_reduce(num)
        num = (num / comm.get_world_size()).clamp(min=1.0).item()

        b_idx, q_idx = batch_indices(indices)
        b_idx, q_idx = b_idx.to(masks.device), q_idx.to(masks.device)
        losses = {}
        if "loss_cls" in terms:
            # classification: one-hot targets on matched queries, zeros elsewhere
            logits = outputs["pred_logits"]
            tgt_labels = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)]) if targets else None
            cls_target = torch.zeros_like(logits)
            if q_idx.numel():
                cls_target[b_idx, q_idx, tgt_labels] = 1.0
            losses["loss_cls"] = sigmoid_focal_loss(logits, cls_target, self.focal_alpha, self.focal_gamma,
                                                    "sum") / num

        with_obj = "loss_objectness" in terms
        if q_idx.numel():
            src_masks = masks[b_idx, q_idx]
            tgt_masks = torch.cat([t["masks"][j] for t, (_, j) in zip(targets, indices)]).to(src_masks.dtype)
            losses["loss_dice"] = dice_loss(src_masks, tgt_masks) / num
            losses["loss_mask"] = F.binary_cross_entropy_with_logits(src_masks, tgt_masks, reduction="mean")
            if with_obj:
                ious = mask_iou(src_masks, tgt_masks, self.iou_threshold)
                obj = outputs["pred_objectness"][b_idx, q_idx]
                losses["loss_objectness"] = F.binary_cross_entropy_with_logits(obj, ious, reduction="mean")
        else:
            # keep every parameter in the graph (DDP) with zero-valued losses
            zero = masks.sum() * 0.0 + (outputs["pred_objectness"].sum() * 0.0 if with_obj else 0.0)
            losses.update({k: zero for k in ("loss_dice", "loss_mask", "loss_objectness") if k in terms})
        return losses

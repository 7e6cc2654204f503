# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Training losses: every loss of a training step, given the model's outputs and the targets.

Per set of N predictions, matched to the targets (:mod:`mobileinst.criterion.matcher`),
the paper's L = w_cls L_cls + L_mask + w_obj L_obj with L_mask = w_dice L_dice + w_bce L_bce:

* "loss_cls", L_cls: sigmoid focal loss over all N queries (unmatched ones are negatives);
* "loss_mask_dice" and "loss_mask_bce", the two terms of L_mask: dice and
  pixel-wise BCE on the matched queries;
* "loss_obj", L_obj: BCE between the objectness logit and the IoU of the matched
  query's binarised mask with its target (IoU-aware objectness).

Sums are normalised by the number of target instances (averaged over all
processes), as in DETR and SparseInst.

``SetCriterion(outputs, targets)`` returns all losses of a step
(:meth:`SetCriterion.forward`): those of the instance predictions; with
temporal query passing (``mobileinst.video.MobileInstVideo``), L_mask of frame
t's queries on frame t+d under frame t+d's assignment M^{t+d} ("_qp"); with
the pooled class head (``PooledClassDualInstanceDecoder``) its losses on the
ground-truth masks ("loss_pooled_cls", "loss_dense_cls"). :meth:`SetCriterion.set_losses` is
the loss of one set of predictions.
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
                 focal_alpha: float, focal_gamma: float, iou_threshold: float,
                 pooled_class_weight: float, dense_class_weight: float):
        """
        Args:
            pooled_class_weight: LOSS.POOLED_CLASS_WEIGHT, the weight of the
                pooled class head's cross-entropy on ground-truth masks (0: off).
            dense_class_weight: LOSS.DENSE_CLASS_WEIGHT, the weight of its MLP's
                per-position cross-entropy (0: off; only with the pooled loss on).
        """
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weights = {
            "loss_cls": class_weight,
            "loss_mask_dice": dice_weight,
            "loss_mask_bce": pixel_weight,
            "loss_obj": objectness_weight,
        }
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.iou_threshold = iou_threshold
        self.pooled_class_weight = float(pooled_class_weight)
        self.dense_class_weight = float(dense_class_weight)

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
            "pooled_class_weight": c.LOSS.POOLED_CLASS_WEIGHT,
            "dense_class_weight": c.LOSS.DENSE_CLASS_WEIGHT,
        }

    def forward(self, outputs: Dict[str, torch.Tensor], targets: List[dict],
                class_head: Optional[nn.Module] = None) -> Dict[str, torch.Tensor]:
        """All losses of a training step.

        Args:
            outputs: the model's outputs:

                * "pred_logits" (B, N, C), "pred_objectness" (B, N), "pred_masks"
                  (B, N, h, w): the instance predictions of every image of ``targets``;
                * "passed_outputs" (optional, temporal query passing): {"pred_masks"
                  (b, N, h, w)} of frame t's Q_G through the local stage of frame
                  t+d, the last b of ``targets``; L_mask under frame t+d's
                  assignment M^{t+d} of the instance predictions: "_qp";
                * "mask_features": X_mask (len(targets), D, h', w') of every image,
                  read by the pooled class head's losses.
            targets: per image {"labels": (M,), "masks": (M, h, w) in [0, 1]}
                at the resolution of "pred_masks" (the frames t, then t+d, of
                frame pairs).
            class_head: the instance decoder's
                :class:`~mobileinst.instance_decoder.PooledClassHead`, or None.
        Returns:
            weighted losses by name.
        """
        preds = {k: outputs[k] for k in ("pred_logits", "pred_objectness", "pred_masks")}
        losses, indices = self.set_losses(preds, targets, return_indices=True)
        if "passed_outputs" in outputs:
            b = outputs["passed_outputs"]["pred_masks"].shape[0]
            passed = self.set_losses(outputs["passed_outputs"], targets[-b:], indices[-b:], mask_only=True)
            losses.update(_suffixed(passed, "_qp"))
        if class_head is not None and self.pooled_class_weight > 0:
            losses.update(self.pooled_class_losses(class_head, outputs["mask_features"], targets))
        return losses

    def set_losses(self, outputs: Dict[str, torch.Tensor], targets: List[dict], indices: Optional[Indices] = None,
                   mask_only: bool = False, return_indices: bool = False):
        """The losses of one set of predictions, matched to ``targets``.

        Args:
            outputs: "pred_logits" (B, N, C), "pred_objectness" (B, N),
                "pred_masks" (B, N, h, w) mask logits ("pred_masks" alone with
                ``mask_only`` and ``indices``).
            targets: per image {"labels": (M,), "masks": (M, h, w) in [0, 1]}
                at the resolution of "pred_masks".
            indices: an assignment M of queries to targets, per image (query
                indices, target indices), to use instead of matching these outputs
                (the passed branch of temporal query passing shares frame t+d's M^{t+d}).
            mask_only: L_mask alone (loss_mask_dice and loss_mask_bce), no class
                or objectness term.
            return_indices: also return the assignment used.
        Returns:
            weighted losses: loss_cls, loss_mask_dice, loss_mask_bce, loss_obj (or
            the two of L_mask); with ``return_indices``, (losses, M).
        """
        terms = ("loss_mask_dice", "loss_mask_bce") if mask_only else tuple(self.weights)
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

        with_obj = "loss_obj" in terms
        if q_idx.numel():
            src_masks = masks[b_idx, q_idx]
            tgt_masks = torch.cat([t["masks"][j] for t, (_, j) in zip(targets, indices)]).to(src_masks.dtype)
            losses["loss_mask_dice"] = dice_loss(src_masks, tgt_masks) / num
            losses["loss_mask_bce"] = F.binary_cross_entropy_with_logits(src_masks, tgt_masks, reduction="mean")
            if with_obj:
                ious = mask_iou(src_masks, tgt_masks, self.iou_threshold)
                obj = outputs["pred_objectness"][b_idx, q_idx]
                losses["loss_obj"] = F.binary_cross_entropy_with_logits(obj, ious, reduction="mean")
        else:
            # keep every parameter in the graph (DDP) with zero-valued losses
            zero = masks.sum() * 0.0 + (outputs["pred_objectness"].sum() * 0.0 if with_obj else 0.0)
            losses.update({k: zero for k in ("loss_mask_dice", "loss_mask_bce", "loss_obj") if k in terms})
        return losses

    # ------------------------------------------------------------ pooled class head
    def pooled_class_losses(self, class_head: nn.Module, x_mask: torch.Tensor,
                            targets: List[dict]) -> Dict[str, torch.Tensor]:
        """PooledClassDualInstanceDecoder: "loss_pooled_cls", the cross-entropy of the
        pooled class head on X_mask features averaged inside each ground-truth
        mask (LOSS.POOLED_CLASS_WEIGHT), and with LOSS.DENSE_CLASS_WEIGHT
        "loss_dense_cls" (:meth:`dense_class_loss`). Trains the class features
        without the duplicates and label noise of matching.

        Args:
            class_head: the :class:`mobileinst.instance_decoder.PooledClassHead`.
            x_mask: X_mask (B, D, h, w) of the images of ``targets``.
        """
        feats = class_head.feature_map(x_mask)  # once, for the pooled and the dense loss
        covers = mask_covers(targets, feats.shape[-2:], feats.dtype)  # likewise the masks on its grid
        logits, labels = [], []
        for i, (t, cover) in enumerate(zip(targets, covers)):
            if cover is None:
                continue
            logits.append(class_head.pool_logits(feats[i: i + 1], cover[None])[0])
            labels.append(t["labels"])
        if not logits:  # keep the head in the graph (DDP) with a zero loss
            zero = sum(p.sum() for p in class_head.pooled_cls.parameters()) * 0.0 + feats.sum() * 0.0
            return {"loss_pooled_cls": zero, **({"loss_dense_cls": zero} if self.dense_class_weight > 0 else {})}
        loss = F.cross_entropy(torch.cat(logits), torch.cat(labels))
        losses = {"loss_pooled_cls": loss * self.pooled_class_weight}
        if self.dense_class_weight > 0:
            dense = self.dense_class_loss(class_head, feats, targets, covers)
            losses["loss_dense_cls"] = dense * self.dense_class_weight
        return losses

    @staticmethod
    def dense_class_loss(class_head: nn.Module, feats: torch.Tensor, targets: List[dict],
                         covers: Optional[List[Optional[torch.Tensor]]] = None) -> torch.Tensor:
        """LOSS.DENSE_CLASS_WEIGHT (unweighted): per-position cross-entropy of the
        pooled class head's MLP on its feature map ``feats``; a position's label
        is that of the ground-truth mask covering more than half of it, positions
        no mask covers that much are ignored. ``covers``: :func:`mask_covers` on
        the grid of ``feats``, when the caller has them already."""
        logits = class_head.dense_logits(feats)  # B, C, h, w
        h, w = logits.shape[-2:]
        if covers is None:
            covers = mask_covers(targets, (h, w), logits.dtype)
        labels = torch.full((logits.shape[0], h, w), -100, dtype=torch.int64, device=logits.device)
        for i, (t, cover) in enumerate(zip(targets, covers)):
            if cover is None:
                continue
            best, idx = cover.max(0)
            labels[i] = torch.where(best > 0.5, t["labels"][idx], labels[i])
        if not (labels >= 0).any():
            return logits.sum() * 0.0
        return F.cross_entropy(logits, labels, ignore_index=-100)


def mask_covers(targets: List[dict], size, dtype) -> List[Optional[torch.Tensor]]:
    """Per target, its GT masks area-pooled to a grid of ``size`` ((M, h, w):
    the share of each cell a mask covers), or None for an image without objects."""
    return [F.adaptive_avg_pool2d(t["masks"][None].to(dtype), tuple(size))[0] if len(t["labels"]) else None
            for t in targets]


def _suffixed(losses: Dict[str, torch.Tensor], suffix: str) -> Dict[str, torch.Tensor]:
    return {k + suffix: v for k, v in losses.items()}

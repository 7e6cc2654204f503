# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Inference post-processing, fully vectorised: one ranking order
(:func:`rank_detections`) for the PyTorch model, the exported image graph
(``mobileinst.export.ImageModel``) and the runtime (which keeps scores >
CLS_THRESHOLD; ``mobileinst_runtime.ranking`` is its numpy mirror for ncnn):

    candidates: each query with its top class (SparseInst's rule, the paper's),
        or every (query, class) pair with INFERENCE.MULTI_CLASS (Mask2Former's)
    score = sqrt(sigmoid(cls) * sigmoid(objectness))
    score *= mean mask probability inside the mask (prob > MASK_THRESHOLD)
    keep the top MAX_DETECTIONS by score
    NMS_SIGMA > 0: Matrix-NMS decay of same-class duplicates, re-sorted
    keep score > CLS_THRESHOLD; resize masks to the original image size

Dropping the candidates <= CLS_THRESHOLD before the decay gives the same final
set and scores as dropping them after it (a candidate decays only by those
scored above it, and the decay only lowers scores), which
:func:`rank_detections` does to decay fewer masks.

The single-class path follows this order too. Before, it thresholded the
query score before the rescoring by the mask (so a query above CLS_THRESHOLD
but rescored below it, e.g. with an empty mask, was kept; with NMS_SIGMA the
decayed rescored score was thresholded again) and took the top MAX_DETECTIONS
after the decay (so with NMS_SIGMA a query outside the top MAX_DETECTIONS by
rescored score could enter it when those above it decayed); its detections
came in query order when they were at most MAX_DETECTIONS, now by score.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.structures import Boxes, Instances
from mobileinst_core.masks import paste_masks, scaled_size


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight XYXY boxes of boolean masks (K, H, W), without a loop; empty -> 0."""
    if masks.shape[0] == 0:
        return masks.new_zeros((0, 4), dtype=torch.float32)
    return _boxes_from_projections(masks.any(dim=1), masks.any(dim=2))


def class_scores(logits: torch.Tensor, objectness: torch.Tensor) -> torch.Tensor:
    """(N, C) class logits, (N,) objectness logits -> (N, C) sqrt(sigmoid(cls) * sigmoid(obj))."""
    return (logits.sigmoid() * objectness.sigmoid()[..., None]).sqrt()


def score_queries(logits: torch.Tensor, objectness: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(N, C) class logits, (N,) objectness logits -> (scores, labels)."""
    prob, labels = logits.sigmoid().max(-1)
    return (prob * objectness.sigmoid()).sqrt(), labels


def rescore_by_masks(scores: torch.Tensor, mask_prob: torch.Tensor, mask_threshold: float) -> torch.Tensor:
    """Multiply scores by the mean mask probability inside each mask."""
    binary = (mask_prob > mask_threshold).to(mask_prob.dtype)
    mask_scores = (mask_prob * binary).sum((-2, -1)) / (binary.sum((-2, -1)) + 1e-6)
    return scores * mask_scores


def resize_masks(mask_prob: torch.Tensor, padded_size, image_size, output_size) -> torch.Tensor:
    """Resize (K, h, w) mask probabilities on the padded grid to ``output_size``.

    One bilinear interpolation: the padded grid is scaled so that the valid
    ``image_size`` region becomes ``output_size``, then cropped.
    """
    oh, ow = int(output_size[0]), int(output_size[1])
    th, tw = scaled_size(padded_size, image_size, output_size)
    out = F.interpolate(mask_prob[:, None], size=(th, tw), mode="bilinear", align_corners=False)
    return out[:, 0, :oh, :ow]


def matrix_nms(binary: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """Matrix NMS (SOLOv2), Gaussian kernel: decayed scores, no loop and no
    hard suppression (exportable).

    Args:
        binary: (K, P) float 0/1 masks, rows sorted by ``scores`` descending.
        labels: (K,) classes; only masks of the same class decay each other.
        scores: (K,) descending.
    Returns:
        (K,) scores * min_i exp(-sigma * (iou_ij^2 - comp_i^2)) over the higher
        scored i of the same class, where comp_i is i's own largest IoU with a
        mask scored above it.
    """
    k = binary.shape[0]
    if k == 0:
        return scores
    inter = binary @ binary.t()
    areas = binary.sum(1)
    iou = inter / (areas[:, None] + areas[None, :] - inter).clamp(min=1.0)
    upper = torch.ones(k, k, dtype=torch.bool, device=binary.device).triu(1)
    iou = iou * (upper & (labels[:, None] == labels[None, :])).to(iou.dtype)
    comp = iou.max(0).values[:, None]  # (K, 1): row i's compensation
    decay = torch.exp(-sigma * (iou ** 2 - comp ** 2)).min(0).values
    return scores * decay


def decay_duplicates(scores, labels, mask_prob, mask_threshold: float, sigma: float):
    """:func:`matrix_nms` on candidates sorted by score (descending), with masks
    binarised at ``mask_threshold``. Returns (decayed scores, order), re-sorted:
    ``order`` indexes the candidates."""
    binary = (mask_prob > mask_threshold).flatten(1).to(mask_prob.dtype)
    return matrix_nms(binary, labels, scores, sigma).sort(descending=True)


def rank_detections(logits: torch.Tensor, objectness: torch.Tensor, mask_prob: torch.Tensor, mask_threshold: float,
                    max_detections: int, multi_class: bool = False, nms_sigma: float = 0.0,
                    score_threshold: Optional[float] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The candidates of one image in the one ranking order (module docstring),
    by score, descending: (scores (K,), queries (K,), classes (K,)), K <=
    ``max_detections``.

    The ranking of :func:`postprocess_instances` and of the exported image graph
    (:class:`mobileinst.export.ImageModel`, without ``score_threshold``).
    Traceable for export: one top-k, no loop over queries.

    Args:
        logits, objectness: (N, C) class and (N,) objectness logits.
        mask_prob: (N, h, w) mask probabilities.
        multi_class: the candidates are all (query, class) pairs, scored
            :func:`class_scores` (Mask2Former's rule; a query may come with
            several classes); otherwise each query with its top class,
            :func:`score_queries`. Scores are rescored by the masks
            (:func:`rescore_by_masks`), then the top ``max_detections`` kept.
        nms_sigma: > 0: the scores of same-class duplicates decay by
            :func:`matrix_nms` (INFERENCE.NMS_SIGMA), then re-sorted.
        score_threshold: keep the scores > it, after the decay (CLS_THRESHOLD);
            the candidates at or below it are dropped before the decay too, which
            changes nothing else. None keeps all K (the exported graph's output;
            the runtime then keeps scores > CLS_THRESHOLD).
    """
    if multi_class:
        pair_scores = class_scores(logits, objectness)
        pair_scores = rescore_by_masks(pair_scores.t(), mask_prob, mask_threshold).t()  # (N, C)
        num_classes = pair_scores.shape[1]
        scores, flat = pair_scores.flatten().topk(min(max_detections, pair_scores.numel()))
        queries, classes = flat // num_classes, flat % num_classes
    else:
        scores, classes = score_queries(logits, objectness)
        scores = rescore_by_masks(scores, mask_prob, mask_threshold)
        scores, queries = scores.topk(min(max_detections, scores.shape[0]))
        classes = classes[queries]
    if score_threshold is not None:
        scores, queries, classes = _above(score_threshold, scores, queries, classes)
    if nms_sigma > 0:
        scores, order = decay_duplicates(scores, classes, mask_prob[queries], mask_threshold, nms_sigma)
        queries, classes = queries[order], classes[order]
        if score_threshold is not None:
            scores, queries, classes = _above(score_threshold, scores, queries, classes)
    return scores, queries, classes


def _above(threshold: float, scores, *rest):
    keep = scores > threshold
    return (scores[keep],) + tuple(x[keep] for x in rest)


def _binarize_resized_cpu(mask_prob: torch.Tensor, padded_size, image_size, output_size, threshold):
    """CPU fast path of ``resize_masks(...) > threshold`` plus the masks' boxes
    (:func:`mobileinst_core.masks.paste_masks`, shared with the ONNX runtime)."""
    masks, cols, rows = paste_masks(mask_prob.float().numpy(), padded_size, image_size, output_size, threshold)
    return torch.from_numpy(masks), _boxes_from_projections(torch.from_numpy(cols), torch.from_numpy(rows))


def _boxes_from_projections(x_any: torch.Tensor, y_any: torch.Tensor) -> torch.Tensor:
    w, h = x_any.shape[1], y_any.shape[1]
    xs = torch.arange(w, device=x_any.device)
    ys = torch.arange(h, device=y_any.device)
    x0 = torch.where(x_any, xs, w).amin(1)
    x1 = torch.where(x_any, xs, -1).amax(1) + 1
    y0 = torch.where(y_any, ys, h).amin(1)
    y1 = torch.where(y_any, ys, -1).amax(1) + 1
    boxes = torch.stack([x0, y0, x1, y1], 1).float()
    return boxes * x_any.any(1, keepdim=True).float()


def binarize_masks(mask_prob: torch.Tensor, padded_size, image_size, output_size, threshold: float):
    """(K, h, w) probabilities -> (K, H, W) bool masks at ``output_size`` and XYXY boxes."""
    if mask_prob.device.type == "cpu" and mask_prob.shape[0] > 0 and not torch.jit.is_tracing():
        return _binarize_resized_cpu(mask_prob, padded_size, image_size, output_size, threshold)
    masks = resize_masks(mask_prob, padded_size, image_size, output_size) > threshold
    return masks, masks_to_boxes(masks)


def postprocess_instances(logits, objectness, mask_logits, padded_size, image_size, output_size,
                          cls_threshold: float, mask_threshold: float, max_detections: int,
                          multi_class: bool = False, nms_sigma: float = 0.0) -> Instances:
    """One image: (N, C), (N,), (N, h, w) -> detectron2 Instances at ``output_size``,
    ranked by :func:`rank_detections` and kept above ``cls_threshold``.

    ``multi_class``: rank all (query, class) pairs instead of each query's top
    class (Mask2Former's rule); a mask may then be returned with several classes.
    ``nms_sigma`` > 0: decay the scores of same-class duplicates with
    :func:`matrix_nms` (beyond the paper, which is NMS-free; off by default).
    """
    mask_prob = mask_logits.sigmoid()
    scores, queries, labels = rank_detections(logits, objectness, mask_prob, mask_threshold, max_detections,
                                              multi_class, nms_sigma, cls_threshold)
    index = None
    if multi_class:  # a query may come with several classes: its mask once
        queries, index = torch.unique(queries, return_inverse=True)
    mask_prob = mask_prob[queries]
    result = Instances((int(output_size[0]), int(output_size[1])))
    if scores.numel():
        masks, boxes = binarize_masks(mask_prob, padded_size, image_size, output_size, mask_threshold)
        if index is not None:  # masks were computed once per query
            masks, boxes = masks[index.to(masks.device)], boxes[index.to(boxes.device)]
    else:
        masks = mask_prob.new_zeros((0, int(output_size[0]), int(output_size[1])), dtype=torch.bool)
        boxes = mask_prob.new_zeros((0, 4))
    result.pred_masks = masks.to(scores.device)
    result.pred_boxes = Boxes(boxes.to(scores.device))
    result.scores = scores
    result.pred_classes = labels
    return result

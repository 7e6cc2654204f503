# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Scoring, ranking and Matrix NMS in numpy: the tails of the image and keyframe
graphs (``mobileinst.export.ImageModel`` / ``KeyframeModel``) for backends whose
graph converters cannot take them (ncnn through pnnx has no top-k, sort,
scatter or boolean ops; ``mobileinst.export.ncnn``).

Only what the ncnn backend needs (``backends.py``: :func:`rank_image`,
:func:`keyframe_scores`), the same computations as the PyTorch ones, in
float32, no torch: :func:`rank_detections` is
``mobileinst.postprocess.rank_detections`` without its ``score_threshold``, in
the same one order (candidates, rescored by the masks, top MAX_DETECTIONS,
Matrix-NMS decay re-sorted; the runtime then keeps scores > CLS_THRESHOLD, as
after the ONNX image graph), and :func:`keyframe_scores` is
``mobileinst.video.keyframe_scores`` (tests/export/test_backends.py checks them
against each other on random inputs, MULTI_CLASS on and off, with and without
NMS_SIGMA). The settings (MASK_THRESHOLD, MAX_DETECTIONS, MULTI_CLASS,
NMS_SIGMA) come from export_meta.json
(:class:`mobileinst_core.export_meta.ExportMeta`).

Nothing here duplicates ``mobileinst_core``: the core has no scoring (the
PyTorch path scores with torch, the ONNX graphs inside the graph).
"""
from typing import Tuple

import numpy as np

__all__ = ["rank_detections", "rank_image", "keyframe_scores"]


def sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def class_scores(logits, objectness):
    """(N, C) class logits, (N,) objectness logits -> (N, C) sqrt(sigmoid(cls) * sigmoid(obj))."""
    return np.sqrt(sigmoid(logits) * sigmoid(objectness)[:, None])


def score_queries(logits, objectness):
    """(N, C), (N,) -> scores (N,) sqrt(max_c sigmoid(cls) * sigmoid(obj)), labels (N,) int64."""
    prob = sigmoid(logits)
    labels = prob.argmax(-1).astype(np.int64)
    return np.sqrt(prob.max(-1) * sigmoid(objectness)), labels


def rescore_by_masks(scores, mask_prob, mask_threshold: float):
    """scores (..., K) times the mean probability inside each of the K masks (K, h, w)
    (inside: probability > MASK_THRESHOLD)."""
    binary = (mask_prob > mask_threshold).astype(np.float32)
    mask_scores = (mask_prob * binary).sum((-2, -1)) / (binary.sum((-2, -1)) + np.float32(1e-6))
    return (scores * mask_scores).astype(np.float32)


def matrix_nms(binary, labels, scores, sigma: float = 2.0):
    """Gaussian Matrix NMS (SOLOv2) on (K, P) 0/1 masks sorted by ``scores`` descending:
    scores * min_i exp(-sigma * (iou_ij^2 - comp_i^2)) over the higher scored i of the
    same class, comp_i being i's own largest IoU with a mask scored above it."""
    k = binary.shape[0]
    if k == 0:
        return scores
    inter = binary @ binary.T
    areas = binary.sum(1)
    iou = inter / np.maximum(areas[:, None] + areas[None, :] - inter, np.float32(1.0))
    upper = np.triu(np.ones((k, k), bool), 1)
    iou = iou * (upper & (labels[:, None] == labels[None, :])).astype(np.float32)
    comp = iou.max(0)[:, None]
    decay = np.exp(-np.float32(sigma) * (iou ** 2 - comp ** 2)).min(0)
    return (scores * decay).astype(np.float32)


def _sort_desc(x):
    order = np.argsort(-x, kind="stable")
    return x[order], order


def decay_duplicates(scores, labels, mask_prob, mask_threshold: float, sigma: float):
    """:func:`matrix_nms` on candidates sorted by score, masks binarised at
    ``mask_threshold``; returns (decayed scores, order), re-sorted."""
    binary = (mask_prob > mask_threshold).reshape(len(mask_prob), -1).astype(np.float32)
    return _sort_desc(matrix_nms(binary, labels, scores, sigma))


def _unbatch(x, ndim):
    """Drop leading batch axes of size 1 down to ``ndim`` axes (ncnn keeps some)."""
    x = np.asarray(x)
    while x.ndim > ndim and x.shape[0] == 1:
        x = x[0]
    return x


def rank_detections(logits, objectness, mask_prob, mask_threshold: float, max_detections: int,
                    multi_class: bool = False, nms_sigma: float = 0.0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The candidates of one image in the one ranking order (module docstring), by
    score, descending: (scores (K,), queries (K,) int64, classes (K,) int64), K =
    min(``max_detections``, candidates); no score threshold (the runtime's).

    Args:
        logits, objectness: (N, C) class and (N,) objectness logits.
        mask_prob: (N, h, w) mask probabilities sigmoid(K . X_mask).
        multi_class: candidates are the (query, class) pairs scored :func:`class_scores`,
            otherwise each query with its top class (:func:`score_queries`); both
            rescored by their masks (:func:`rescore_by_masks`), then the top K kept.
        nms_sigma: > 0: same-class duplicates decay by :func:`matrix_nms`, then re-sorted.
    """
    if multi_class:
        num_classes = logits.shape[1]
        pair = rescore_by_masks(class_scores(logits, objectness).T, mask_prob, mask_threshold).T
        k = min(int(max_detections), pair.size)
        flat = np.argsort(-pair.reshape(-1), kind="stable")[:k]
        scores = pair.reshape(-1)[flat]
        queries, classes = (flat // num_classes).astype(np.int64), (flat % num_classes).astype(np.int64)
    else:
        scores, labels = score_queries(logits, objectness)
        scores = rescore_by_masks(scores, mask_prob, mask_threshold)
        k = min(int(max_detections), scores.shape[0])
        queries = np.argsort(-scores, kind="stable")[:k].astype(np.int64)
        scores, classes = scores[queries], labels[queries]
    if nms_sigma > 0:
        scores, order = decay_duplicates(scores, classes, mask_prob[queries], mask_threshold, nms_sigma)
        queries, classes = queries[order], classes[order]
    return scores.astype(np.float32), queries, classes


def rank_image(pred_logits, pred_objectness, mask_logits, mask_threshold: float, max_detections: int,
               multi_class: bool, nms_sigma: float = 0.0):
    """Network outputs of one image (batch axes allowed) -> (scores (K,), classes (K,),
    mask_probs (K, h, w)): the outputs of the ONNX image graph."""
    logits, objectness = _unbatch(pred_logits, 2), _unbatch(pred_objectness, 1)
    probs = sigmoid(_unbatch(mask_logits, 3))
    scores, queries, classes = rank_detections(logits, objectness, probs, mask_threshold, max_detections,
                                               multi_class, nms_sigma)
    return scores, classes, probs[queries]


def keyframe_scores(pred_logits, pred_objectness, mask_logits, mask_threshold: float, nms_sigma: float = 0.0):
    """Per query of a keyframe: (scores (N,), classes (N,), class_scores (N, C)), with
    Matrix NMS's decay when ``nms_sigma`` > 0 (``mask_logits`` (N, h, w) are then
    needed, else may be None)."""
    logits, objectness = _unbatch(pred_logits, 2), _unbatch(pred_objectness, 1)
    scores, classes = score_queries(logits, objectness)
    per_class = class_scores(logits, objectness)
    if nms_sigma > 0:
        probs = sigmoid(_unbatch(mask_logits, 3))
        order = np.argsort(-scores, kind="stable")
        decayed, resort = decay_duplicates(scores[order], classes[order], probs[order], mask_threshold, nms_sigma)
        order = order[resort]
        factor = np.zeros_like(scores)
        factor[order] = decayed / np.maximum(scores[order], np.float32(1e-12))
        scores, per_class = scores * factor, per_class * factor[:, None]
    return scores.astype(np.float32), classes, per_class.astype(np.float32)

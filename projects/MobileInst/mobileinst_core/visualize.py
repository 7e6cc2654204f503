# Copyright (c) MobileInst authors. Licensed under the Apache License 2.0.
"""Drawing tracks on frames (numpy + OpenCV)."""
import colorsys
from typing import List, Optional, Sequence

import cv2
import numpy as np


def track_color(track_id: int) -> tuple:
    """A fixed BGR colour per track id (golden-ratio hues)."""
    h = (int(track_id) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.75, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """(k, H, W) bool -> (k, 4) XYXY, 0 for empty masks."""
    if len(masks) == 0:
        return np.zeros((0, 4), np.float32)
    x_any = masks.any(1)
    y_any = masks.any(2)
    w, h = masks.shape[2], masks.shape[1]
    xs, ys = np.arange(w), np.arange(h)
    boxes = np.stack([np.where(x_any, xs, w).min(1), np.where(y_any, ys, h).min(1),
                      np.where(x_any, xs, -1).max(1) + 1, np.where(y_any, ys, -1).max(1) + 1], 1)
    return (boxes * x_any.any(1, keepdims=True)).astype(np.float32)


FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.45
PAD = 2


def _overlap(a, b) -> int:
    """Intersection area of two XYXY rectangles."""
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def place_labels(boxes: Sequence, sizes: Sequence, frame_size) -> list:
    """Label rectangles that do not overlap where the frame allows: each label
    (in the given order, e.g. by score) takes the first free place of above its
    box, below it, inside its top, inside its bottom (left then right aligned),
    kept inside the frame; where none is free, the place overlapping the labels
    already placed least.

    Args:
        boxes: XYXY boxes of the objects; sizes: (w, h) of each label;
        frame_size: (H, W).
    Returns:
        XYXY integer rectangles, one per label.
    """
    H, W = frame_size
    placed = []
    for (x0, y0, x1, y1), (w, h) in zip(boxes, sizes):
        x0, y0, x1, y1 = int(x0), int(y0), int(x1), int(y1)
        candidates = []
        for top in (y0 - h, y1, y0, y1 - h):
            for left in (x0, x1 - w):
                left = min(max(left, 0), max(W - w, 0))
                top = min(max(top, 0), max(H - h, 0))
                candidates.append((left, top, left + w, top + h))
        best = min(candidates, key=lambda r: sum(_overlap(r, p) for p in placed))  # first of the least overlap
        placed.append(best)
    return placed


def draw_tracks(frame: np.ndarray, masks: np.ndarray, track_ids: Sequence[int], classes: Sequence[int],
                scores: Sequence[float], class_names: Optional[List[str]] = None, score_threshold: float = 0.3,
                alpha: float = 0.5) -> np.ndarray:
    """Overlay masks and contours in one colour per track id, and an
    'id class score' label per track on a filled tag of that colour; labels do
    not overlap where the frame has room (:func:`place_labels`, the highest
    scores placed first)."""
    out = frame.copy()
    masks = np.asarray(masks, bool)
    boxes = masks_to_boxes(masks)
    keep = [i for i, s in enumerate(scores) if s >= score_threshold]
    keep.sort(key=lambda i: -scores[i])
    texts, sizes = [], []
    for i in keep:
        m, color = masks[i], track_color(track_ids[i])
        out[m] = (out[m] * (1 - alpha) + np.array(color, np.float32) * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, color, 1)
        c = classes[i]
        name = class_names[c] if class_names and 0 <= c < len(class_names) else str(c)
        text = f"{track_ids[i]} {name} {scores[i]:.2f}"
        (w, h), base = cv2.getTextSize(text, FONT, FONT_SCALE, 1)
        texts.append((text, base))
        sizes.append((w + 2 * PAD, h + base + 2 * PAD))
    rects = place_labels([boxes[i] for i in keep], sizes, out.shape[:2])
    for i, (text, base), (x0, y0, x1, y1) in zip(keep, texts, rects):
        color = track_color(track_ids[i])
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), color, -1)
        ink = (0, 0, 0) if sum(color) > 380 else (255, 255, 255)
        cv2.putText(out, text, (x0 + PAD, y1 - PAD - base), FONT, FONT_SCALE, ink, 1, cv2.LINE_AA)
    return out

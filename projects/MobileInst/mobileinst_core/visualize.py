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


def draw_tracks(frame: np.ndarray, masks: np.ndarray, track_ids: Sequence[int], classes: Sequence[int],
                scores: Sequence[float], class_names: Optional[List[str]] = None, score_threshold: float = 0.3,
                alpha: float = 0.5) -> np.ndarray:
    """Overlay masks, contours and 'id:class score' labels on a BGR frame."""
    out = frame.copy()
    boxes = masks_to_boxes(np.asarray(masks, bool))
    for m, tid, c, s, b in zip(masks, track_ids, classes, scores, boxes):
        if s < score_threshold:
            continue
        m = np.asarray(m, bool)
        color = track_color(tid)
        out[m] = (out[m] * (1 - alpha) + np.array(color, np.float32) * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, color, 1)
        name = class_names[c] if class_names and 0 <= c < len(class_names) else str(c)
        cv2.putText(out, f"{tid}:{name} {s:.2f}", (int(b[0]), max(int(b[1]) - 3, 10)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, color, 1, cv2.LINE_AA)
    return out


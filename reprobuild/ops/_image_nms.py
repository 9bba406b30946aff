"""NonMaxSuppression on host arrays, as ONNX's reference and onnxruntime define it; used to fold the op when its
inputs are constants (its output has a data-dependent number of rows, so it can never be a layer).

Per batch and class: the boxes whose score is above ``score_threshold`` (all of them without one), by descending
score (ties: the lower box index first), are kept greedily unless their IoU with a box already kept exceeds
``iou_threshold``, until ``max_output_boxes_per_class`` are kept. Arithmetic is in the boxes' float32.
"""

from __future__ import annotations

import numpy as np


def _extent(box: np.ndarray, center_point_box: int) -> tuple[float, float, float, float]:
    """(x_min, x_max, y_min, y_max) of one box."""
    if center_point_box:
        half_w, half_h = box[2] / 2, box[3] / 2
        return box[0] - half_w, box[0] + half_w, box[1] - half_h, box[1] + half_h
    return min(box[1], box[3]), max(box[1], box[3]), min(box[0], box[2]), max(box[0], box[2])


def _suppresses(a: np.ndarray, b: np.ndarray, center_point_box: int, iou_threshold: np.float32) -> bool:
    ax0, ax1, ay0, ay1 = _extent(a, center_point_box)
    bx0, bx1, by0, by1 = _extent(b, center_point_box)
    ix0, ix1, iy0, iy1 = max(ax0, bx0), min(ax1, bx1), max(ay0, by0), min(ay1, by1)
    if ix1 <= ix0 or iy1 <= iy0:
        return False
    inter = (ix1 - ix0) * (iy1 - iy0)
    area_a, area_b = (ax1 - ax0) * (ay1 - ay0), (bx1 - bx0) * (by1 - by0)
    union = area_a + area_b - inter
    if inter <= 0 or area_a <= 0 or area_b <= 0 or union <= 0:
        return False
    return bool(inter / union > iou_threshold)


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, max_per_class: int, iou_threshold: float,
                        score_threshold: float | None, center_point_box: int) -> np.ndarray:
    """[selected, 3] int64 rows (batch, class, box), by batch, class, then selection order."""
    boxes, scores = boxes.astype(np.float32), scores.astype(np.float32)
    iou = np.float32(iou_threshold)
    rows = []
    for b in range(boxes.shape[0]):
        for c in range(scores.shape[1]):
            s = scores[b, c]
            candidates = [i for i in range(s.shape[0])
                          if score_threshold is None or s[i] > np.float32(score_threshold)]
            candidates.sort(key=lambda i: (-s[i], i))
            kept: list[int] = []
            for i in candidates:
                if len(kept) >= max_per_class:
                    break
                if not any(_suppresses(boxes[b, i], boxes[b, k], center_point_box, iou) for k in kept):
                    kept.append(i)
                    rows.append((b, c, i))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)

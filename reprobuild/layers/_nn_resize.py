"""Resize's sampling plan along one axis, computed on the host from shapes and attributes alone.

Resize is separable: each resized axis in turn maps every output position to a source coordinate
(``coordinate_transformation_mode``), picks the neighbouring input positions (edge positions repeat) and blends
them with weights from the interpolation kernel (nearest, linear, cubic, optionally stretched to antialias).
The arithmetic follows ``onnx.reference``'s ``op_resize`` step by step, in float64, so that ties (a coordinate
exactly halfway, ``nearest_mode``) fall the same way. The device then only gathers and weighs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AxisPlan:
    """``index`` (out, taps): input positions, clamped into [0, in); ``weights`` (out, taps), None for nearest
    (one tap); ``outside`` (out,): positions that take ``extrapolation_value`` (tf_crop_and_resize), or None."""

    index: np.ndarray
    weights: np.ndarray | None
    outside: np.ndarray | None


def source_coordinates(ctm: str, out_len: int, in_len: int, scale: float, roi: tuple[float, float],
                       roi_dtype: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Each output position's coordinate in the input, and for tf_crop_and_resize which ones fall outside."""
    y = np.arange(out_len, dtype=np.float64)
    width = scale * in_len  # the (fractional) output length the reference divides by
    if ctm == "align_corners":
        return (np.zeros(out_len) if width == 1 else y * (in_len - 1) / (width - 1)), None
    if ctm == "asymmetric":
        return y / scale, None
    if ctm == "tf_half_pixel_for_nn":
        return (y + 0.5) / scale, None
    if ctm == "pytorch_half_pixel":
        return (np.full(out_len, -0.5) if width == 1 else (y + 0.5) / scale - 0.5), None
    if ctm == "half_pixel":
        return (y + 0.5) / scale - 0.5, None
    if ctm == "half_pixel_symmetric":
        offset = in_len / 2 * (1 - out_len / width)
        return offset + (y + 0.5) / scale - 0.5, None
    assert ctm == "tf_crop_and_resize", ctm
    start, end = np.dtype(roi_dtype).type(roi[0]), np.dtype(roi_dtype).type(roi[1])  # the reference's rounding
    if width == 1:
        x = np.full(out_len, (end - start) * (in_len - 1) / 2, dtype=np.float64)
    else:
        x = y * (end - start) * (in_len - 1) / (width - 1)
    x = x + start * (in_len - 1)
    return x, (x < 0) | (x > in_len - 1)


def kernel_weights(mode: str, ratio: np.ndarray, scale: float, cubic_a: float, antialias: int) -> np.ndarray:
    """Interpolation weights (out, taps) for the fractional parts ``ratio`` in (0, 1]."""
    r = ratio[:, None]
    if mode == "linear" and not antialias:
        return np.concatenate([1 - r, r], axis=1)
    if mode == "linear":
        s = min(scale, 1.0)
        start = int(np.floor(-1 / s) + 1)
        args = (np.arange(start, start + 2 - 2 * start)[None, :] - r) * s
        weights = np.clip(1 - np.abs(args), 0, 1)
        return weights / weights.sum(axis=1, keepdims=True)
    a = cubic_a
    if not antialias:
        q = 1 - r
        return np.concatenate([((a * (r + 1) - 5 * a) * (r + 1) + 8 * a) * (r + 1) - 4 * a,
                               ((a + 2) * r - (a + 3)) * r * r + 1,
                               ((a + 2) * q - (a + 3)) * q * q + 1,
                               ((a * (q + 1) - 5 * a) * (q + 1) + 8 * a) * (q + 1) - 4 * a], axis=1)
    s = min(scale, 1.0)
    start = int(np.floor(-2 / s) + 1)
    t = np.abs(s * (np.arange(start, 2 - start)[None, :] - r))
    near = (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1
    far = a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a
    weights = np.where(t <= 1, near, np.where(t < 2, far, 0.0))
    return weights / weights.sum(axis=1, keepdims=True)


def _neighbours(x: np.ndarray, taps: int) -> np.ndarray:
    """The ``taps`` positions nearest to each coordinate, the smaller one on a tie (unclamped)."""
    pad = int(np.ceil(taps / 2))
    shifted = x + pad
    floor = np.floor(shifted).astype(np.int64)
    frac = shifted - floor
    if taps % 2 == 0:
        offset = np.where(frac == 0, -(taps // 2), -(taps // 2) + 1)
    else:
        base = -((taps - 1) // 2)
        offset = np.where(frac <= 0.5, base, base + 1)
    return (floor + offset)[:, None] + np.arange(taps)[None, :] - pad


@functools.lru_cache(maxsize=512)
def axis_plan(mode: str, ctm: str, nearest_mode: str, cubic_a: float, exclude_outside: int, antialias: int,
              scale: float, in_len: int, out_len: int, roi: tuple[float, float], roi_dtype: str) -> AxisPlan:
    x, outside = source_coordinates(ctm, out_len, in_len, scale, roi, roi_dtype)
    whole = x == np.floor(x)
    ratio = np.where(whole, 1.0, x - np.floor(x))  # in (0, 1]; 1 takes the right neighbour (the reference's rule)
    if mode == "nearest":
        pair = _neighbours(x, 2)
        if nearest_mode == "round_prefer_floor":
            right = ratio > 0.5
        elif nearest_mode == "round_prefer_ceil":
            right = ratio >= 0.5
        else:
            right = np.full(out_len, nearest_mode == "ceil")
        pick = np.where((ratio == 1.0) | right, pair[:, 1], pair[:, 0])
        plan = AxisPlan(np.clip(pick, 0, in_len - 1)[:, None], None, outside)
    else:
        weights = kernel_weights(mode, ratio, scale, cubic_a, antialias)
        index = _neighbours(x, weights.shape[1])
        if exclude_outside:
            weights = np.where((index < 0) | (index >= in_len), 0.0, weights)
            total = weights.sum(axis=1, keepdims=True)
            weights = weights / np.where(total == 0, 1.0, total)
        plan = AxisPlan(np.clip(index, 0, in_len - 1), weights, outside)
    for array in (plan.index, plan.weights, plan.outside):
        if array is not None:
            array.setflags(write=False)
    return plan

"""RoiAlign's computation, in the order of ONNX's reference and onnxruntime (whose arithmetic it repeats in the
input's precision, float32 for float16 and bfloat16).

Each box is scaled by ``spatial_scale`` (and shifted by -0.5 with ``half_pixel``), split into output_height x
output_width bins, and each bin sampled on a grid of ``sampling_ratio`` x ``sampling_ratio`` points (with 0:
ceil(box size / bins) points per direction, different for each box). A point more than one pixel outside the map
reads 0; otherwise it is interpolated bilinearly from its four neighbours (clamped to the map). ``avg`` averages
the points; ``max`` takes the largest *weighted neighbour* over the points (max of w_k * v_k, not of the
interpolated values): that is what ONNX's reference and onnxruntime compute, and what is reproduced here.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def box_geometry(xp: Any, rois: Any, attrs: Any, work: Any) -> tuple[Any, Any, Any, Any]:
    """(start_h, start_w, bin_h, bin_w), each (R,), in ``work``."""
    rois = rois.astype(work)
    scale = work(attrs["spatial_scale"])
    offset = 0.5 if attrs["half_pixel"] else 0.0
    start_w, start_h = rois[:, 0] * scale - offset, rois[:, 1] * scale - offset
    end_w, end_h = rois[:, 2] * scale - offset, rois[:, 3] * scale - offset
    width, height = end_w - start_w, end_h - start_h
    if not attrs["half_pixel"]:  # malformed boxes become 1 x 1
        width, height = xp.maximum(width, 1), xp.maximum(height, 1)
    return start_h, start_w, height / attrs["output_height"], width / attrs["output_width"]


def _axis_samples(xp: Any, start: Any, bin_size: Any, grid: Any, bins: int, k: int, size: int,
                  work: Any) -> tuple[Any, Any, Any, Any, Any]:
    """Sample k of every bin along one axis: (low index, high index, low weight, high weight, inside), (R, bins)."""
    b = xp.asarray(np.arange(bins, dtype=np.float64)).astype(work)[None, :]
    pos = start[:, None] + b * bin_size[:, None] + (work(k + 0.5) * bin_size)[:, None] / grid[:, None]
    inside = (pos >= -1.0) & (pos <= size)  # False for NaN (a box whose grid is empty: 0/0)
    pos = xp.maximum(xp.where(inside, pos, 0), 0)
    low = xp.floor(pos)
    at_end = low >= size - 1
    low = xp.where(at_end, size - 1, low)
    high = xp.where(at_end, size - 1, low + 1)
    pos = xp.where(at_end, low, pos)
    frac = pos - low
    return low.astype(xp.int64), high.astype(xp.int64), 1 - frac, frac, inside


def roi_align(xp: Any, x: Any, rois: Any, batch: Any, attrs: Any, work: Any) -> Any:
    """(R, C, output_height, output_width) in ``work``."""
    n, channels, height, width = x.shape
    count_rois = rois.shape[0]
    ph, pw = int(attrs["output_height"]), int(attrs["output_width"])
    start_h, start_w, bin_h, bin_w = box_geometry(xp, rois, attrs, work)
    ratio = int(attrs["sampling_ratio"])
    if ratio > 0:
        grid_h = grid_w = xp.full((count_rois,), ratio, dtype=work)
        steps_h = steps_w = ratio
    else:
        grid_h = xp.asarray(np.asarray(attrs["grid_h"], dtype=np.float64)).astype(work)
        grid_w = xp.asarray(np.asarray(attrs["grid_w"], dtype=np.float64)).astype(work)
        steps_h, steps_w = max(attrs["grid_h"], default=0), max(attrs["grid_w"], default=0)
    table = x.astype(work).transpose(0, 2, 3, 1).reshape(n, height * width, channels)
    b = xp.clip(batch.astype(xp.int64), 0, n - 1)[:, None, None]
    is_max = attrs["mode"] == "max"
    total = xp.full((count_rois, ph, pw, channels), -xp.inf if is_max else 0, dtype=work)
    for iy in range(steps_h):
        y_lo, y_hi, wy_lo, wy_hi, y_in = _axis_samples(xp, start_h, bin_h, grid_h, ph, iy, height, work)
        for ix in range(steps_w):
            x_lo, x_hi, wx_lo, wx_hi, x_in = _axis_samples(xp, start_w, bin_w, grid_w, pw, ix, width, work)
            inside = (y_in[:, :, None] & x_in[:, None, :]).astype(work)  # (R, ph, pw)
            terms = []
            for yi, wy in ((y_lo, wy_lo), (y_hi, wy_hi)):
                for xi, wx in ((x_lo, wx_lo), (x_hi, wx_hi)):
                    weight = wy[:, :, None] * wx[:, None, :] * inside
                    values = table[b, yi[:, :, None] * width + xi[:, None, :]]  # (R, ph, pw, C)
                    terms.append(weight[..., None] * values)
            if is_max:
                update = xp.maximum(total, xp.maximum(xp.maximum(xp.maximum(terms[0], terms[1]), terms[2]), terms[3]))
            else:
                update = total + (terms[0] + terms[1] + terms[2] + terms[3])
            if ratio > 0:
                total = update
            else:  # boxes with fewer sample points than the largest skip the extra ones
                total = xp.where(((grid_h > iy) & (grid_w > ix))[:, None, None, None], update, total)
    samples = (grid_h * grid_w)[:, None, None, None]
    total = xp.where(samples > 0, total, 0) if is_max else total / xp.maximum(samples, 1)
    return xp.ascontiguousarray(total.transpose(0, 3, 1, 2))

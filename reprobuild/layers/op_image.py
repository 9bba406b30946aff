"""Image sampling: GridSample, AffineGrid, RoiAlign, and NonMaxSuppression (folded only).

The sampling itself lives in ``_image_grid`` (GridSample), ``_image_roi`` (RoiAlign) and ``_image_nms``. ONNX
subtleties:

- GridSample 16 takes 4-D inputs and the modes bilinear / nearest / bicubic; 20 renamed them linear / nearest /
  cubic and allows any number of spatial dimensions. The canonical ``mode`` is the newer name. The grid's last
  dimension lists the coordinates innermost first (x = width, then y = height, then depth). ``reflection`` with
  ``align_corners`` over a dimension of size 1 reflects in an interval of length 0 (undefined; refused).
- AffineGrid's base grid runs from -1 to 1 over pixel centers (edges with ``align_corners``); a dimension of size 1
  with align_corners=1 is -1 in ONNX's reference and 1 in onnxruntime, so it is refused.
- RoiAlign 10 has no ``coordinate_transformation_mode`` and behaves as ``output_half_pixel``; 16 defaults to
  ``half_pixel``. With sampling_ratio=0 the number of sample points depends on each box's size, so the boxes must
  be known when the engine is built (they become the canonical ``grid_h`` / ``grid_w``); with a positive ratio
  they may be a run-time input.
- NonMaxSuppression's output has a data-dependent number of rows: computed when the network is parsed from
  constant inputs, refused otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from reprobuild.core.dtypes import FLOATS
from reprobuild.layers._image_grid import grid_sample
from reprobuild.layers._image_roi import roi_align
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType


def _work(xp: Any, *arrays: Any) -> Any:
    return xp.float64 if any(a.dtype == xp.float64 for a in arrays) else xp.float32


class GridSample(LayerDef):
    op = "GridSample"
    version = 2
    num_inputs = (2, 2)
    dtypes = FLOATS

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        x, grid = inputs
        if grid.dtype not in FLOATS:
            raise OpError(f"grid has dtype {grid.dtype}; expected a float type")
        r = x.rank - 2
        if r < 1 or grid.rank != x.rank or grid.shape[0] != x.shape[0] or grid.shape[-1] != r:
            raise OpError(f"input {list(x.shape)} (N, C, {r} spatial dims) needs a grid (N, *out, {max(r, 0)}); got "
                          f"{list(grid.shape)}")
        if 0 in x.shape[2:]:
            raise OpError(f"input {list(x.shape)} has an empty spatial dimension")
        return [TensorType((x.shape[0], x.shape[1], *grid.shape[1:-1]), x.dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x, grid = inputs
        y = grid_sample(xp, x, grid, attrs["mode"], attrs["padding_mode"], bool(attrs["align_corners"]),
                        _work(xp, x, grid))
        return [y.astype(x.dtype)]


class AffineGrid(LayerDef):
    op = "AffineGrid"
    version = 2
    num_inputs = (2, 2)
    dtypes = FLOATS

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        size, theta = tuple(attrs["size"]), inputs[0]
        r = len(size) - 2
        if theta.shape != (size[0], r, r + 1):
            raise OpError(f"theta has shape {list(theta.shape)}; size {list(size)} needs [{size[0]}, {r}, {r + 1}]")
        return [TensorType((size[0], *size[2:], r), theta.dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        theta = inputs[0]
        size, align = tuple(attrs["size"]), attrs["align_corners"]
        spatial = size[2:]
        axes = [(np.arange(s) * 2.0 / (s - 1) - 1) if align else ((np.arange(s) * 2.0 + 1) / s - 1) for s in spatial]
        mesh = np.meshgrid(*axes, indexing="ij")  # per spatial dim, D/H/W order
        base = np.stack([*reversed(mesh), np.ones(spatial)], axis=-1).reshape(-1, len(spatial) + 1)
        grid = xp.matmul(xp.asarray(base)[None], xp.swapaxes(theta.astype(xp.float64), 1, 2))
        return [grid.reshape((size[0], *spatial, len(spatial))).astype(theta.dtype)]


#: The most sample points RoiAlign computes per channel (boxes x output bins x sampling_ratio**2).
_MAX_SAMPLES = 1 << 32


class RoiAlign(LayerDef):
    op = "RoiAlign"
    version = 2
    num_inputs = (3, 3)
    dtypes = FLOATS
    same_type = (1,)

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        x, rois, batch = inputs
        if x.rank != 4 or 0 in x.shape:
            raise OpError(f"X should be a non-empty (N, C, H, W); got {list(x.shape)}")
        if rois.rank != 2 or rois.shape[1] != 4 or batch.shape != (rois.shape[0],):
            raise OpError(f"rois {list(rois.shape)} should be [num_rois, 4] and batch_indices "
                          f"{list(batch.shape)} [num_rois]")
        if batch.dtype not in ("int64", "int32"):
            raise OpError(f"batch_indices has dtype {batch.dtype}; expected int64")
        if attrs["output_height"] < 1 or attrs["output_width"] < 1 or attrs["sampling_ratio"] < 0 or \
                attrs["mode"] not in ("avg", "max") or attrs["half_pixel"] not in (0, 1):
            raise OpError(f"output_height ({attrs['output_height']}) and output_width ({attrs['output_width']}) "
                          f"must be positive, sampling_ratio ({attrs['sampling_ratio']}) non-negative, mode avg or "
                          "max and half_pixel 0 or 1")
        samples = rois.shape[0] * attrs["output_height"] * attrs["output_width"] * attrs["sampling_ratio"] ** 2
        if samples > _MAX_SAMPLES:
            raise OpError(f"sampling_ratio {attrs['sampling_ratio']} takes {samples} samples per channel, more than "
                          f"the {_MAX_SAMPLES} reprobuild computes (a crafted value: it would run for days)")
        if attrs["sampling_ratio"] == 0 and not len(attrs["grid_h"]) == len(attrs["grid_w"]) == rois.shape[0]:
            raise OpError(f"{len(attrs['grid_h'])} and {len(attrs['grid_w'])} per-box sample counts for "
                          f"{rois.shape[0]} boxes")
        return [TensorType((rois.shape[0], x.shape[1], attrs["output_height"], attrs["output_width"]), x.dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x, rois, batch = inputs
        return [roi_align(xp, x, rois, batch, attrs, _work(xp, x)).astype(x.dtype)]


LAYERS = (AffineGrid(), GridSample(), RoiAlign())

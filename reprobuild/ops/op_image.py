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
from reprobuild.ops._image_grid import grid_sample
from reprobuild.ops._image_nms import non_max_suppression
from reprobuild.ops._image_roi import adaptive_grid, roi_align
from reprobuild.ops.base import Attr, Attrs, BuildTimeOp, Node, OpDef, OpError, TensorType, ints, scalar

_MODES = {"bilinear": "linear", "bicubic": "cubic", "nearest": "nearest", "linear": "linear", "cubic": "cubic"}
_PADDINGS = ("zeros", "border", "reflection")


def _work(xp: Any, *arrays: Any) -> Any:
    return xp.float64 if any(a.dtype == xp.float64 for a in arrays) else xp.float32


class GridSample(OpDef):
    op, versions = "GridSample", (16, 20, 22)
    version = 2
    # ONNX's default is "bilinear" in version 16 and "linear" from 20 (one mode renamed): convert fills in the
    # version's name.
    attribute_overrides = {"mode": Attr("string")}
    num_inputs = (2, 2)
    dtypes = FLOATS

    def convert(self, node: Node) -> None:
        x, grid = node.input(0), node.input(1)
        assert x is not None and grid is not None
        names = ("bilinear", "nearest", "bicubic") if node.version < 20 else ("linear", "nearest", "cubic")
        mode = str(node.attr("mode")) if node.has_attr("mode") else names[0]
        if mode not in names:
            raise node.fail(f"mode {mode!r} is not one of {', '.join(names)} (GridSample version {node.version})")
        padding = str(node.attr("padding_mode"))
        if padding not in _PADDINGS:
            raise node.fail(f"padding_mode {padding!r} is not one of {', '.join(_PADDINGS)}")
        if node.version < 20 and x.rank != 4:
            raise node.fail(f"GridSample {node.version} takes a 4-D input (N, C, H, W); got {list(x.shape)} (opset "
                            "20 allows more spatial dimensions)")
        align = int(node.attr("align_corners") != 0)
        if padding == "reflection" and align and 1 in x.shape[2:]:
            raise node.fail(f"reflection padding with align_corners=1 is undefined over a spatial dimension of size "
                            f"1 (input {list(x.shape)}): the reflection interval has length 0")
        if _MODES[mode] == "cubic" and padding == "border" and x.rank != 4:
            raise node.fail("cubic mode with border padding is defined (by PyTorch and onnxruntime: the taps are "
                            "clamped, not the point) only for 2-D sampling; ONNX's reference clamps the point, which "
                            f"differs, and nothing else defines it for input {list(x.shape)}")
        node.emit({"mode": _MODES[mode], "padding_mode": padding, "align_corners": align})

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


class AffineGrid(OpDef):
    op, versions = "AffineGrid", (20,)
    version = 2
    num_inputs = (2, 2)
    dtypes = FLOATS

    def convert(self, node: Node) -> None:
        size = ints(node.static(1, "the output size (N, C, H, W) or (N, C, D, H, W)"))
        align = int(node.attr("align_corners") != 0)
        if len(size) not in (4, 5) or min(size) < 1:
            raise node.fail(f"size {list(size)} should be (N, C, H, W) or (N, C, D, H, W) of positive values")
        if align and 1 in size[2:]:
            raise node.fail(f"align_corners=1 over a spatial size of 1 (size {list(size)}) is -1 in ONNX's reference "
                            "and 1 in onnxruntime; use align_corners=0 or a size above 1")
        node.emit({"size": tuple(size), "align_corners": align}, inputs=[0])

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


class RoiAlign(OpDef):
    op, versions = "RoiAlign", (10, 16, 22)
    version = 2
    num_inputs = (3, 3)
    dtypes = FLOATS
    same_type = (1,)

    def convert(self, node: Node) -> None:
        x = node.input(0)
        assert x is not None
        mode = str(node.attr("mode"))
        ctm = str(node.attr("coordinate_transformation_mode")) if node.version >= 16 else "output_half_pixel"
        if mode not in ("avg", "max"):
            raise node.fail(f"mode {mode!r} is not avg or max")
        if ctm not in ("half_pixel", "output_half_pixel"):
            raise node.fail(f"coordinate_transformation_mode {ctm!r} is not half_pixel or output_half_pixel")
        attrs: dict[str, Any] = {
            "mode": mode, "half_pixel": int(ctm == "half_pixel"), "output_height": int(node.attr("output_height")),
            "output_width": int(node.attr("output_width")), "sampling_ratio": int(node.attr("sampling_ratio")),
            "spatial_scale": float(node.attr("spatial_scale")), "grid_h": (), "grid_w": ()}
        if attrs["output_height"] < 1 or attrs["output_width"] < 1 or attrs["sampling_ratio"] < 0:
            raise node.fail(f"output_height ({attrs['output_height']}) and output_width ({attrs['output_width']}) "
                            f"must be positive and sampling_ratio ({attrs['sampling_ratio']}) non-negative")
        if attrs["sampling_ratio"] == 0:
            rois = np.asarray(node.static(1, "rois (with sampling_ratio=0 each box's size decides its number of "
                                             "sample points; set sampling_ratio > 0 to take boxes at run time)"))
            if rois.ndim != 2 or rois.shape[1] != 4:
                raise node.fail(f"rois should be [num_rois, 4]; got {list(rois.shape)}")
            work = np.float64 if x.dtype == "float64" else np.float32
            with np.errstate(all="ignore"):
                attrs["grid_h"], attrs["grid_w"] = adaptive_grid(rois, attrs, work)
        node.emit(attrs)

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


class NonMaxSuppression(BuildTimeOp):
    op, versions = "NonMaxSuppression", (10, 11)
    num_inputs = (2, 5)
    dtypes = ("float32",)

    def convert(self, node: Node) -> None:
        values = [node.const(i) for i in range(node.num_inputs)]
        present = [i for i in range(node.num_inputs) if node.input(i) is not None]
        if any(values[i] is None for i in present):
            raise node.fail("its output has a data-dependent number of rows (the boxes kept), which an engine with "
                            "fixed shapes cannot hold; it is only computed when the network is built, from "
                            "constant boxes, scores and thresholds")
        boxes, scores = np.asarray(values[0]), np.asarray(values[1])
        if boxes.ndim != 3 or boxes.shape[2] != 4 or scores.ndim != 3 or scores.shape[0] != boxes.shape[0] or \
                scores.shape[2] != boxes.shape[1]:
            raise node.fail(f"boxes {list(boxes.shape)} and scores {list(scores.shape)} should be "
                            "[batches, boxes, 4] and [batches, classes, boxes]")
        center = int(node.attr("center_point_box"))
        if center not in (0, 1):
            raise node.fail(f"center_point_box={center} is not 0 or 1")
        optional = [None if i >= len(values) or values[i] is None or np.asarray(values[i]).size == 0
                    else scalar(values[i]) for i in (2, 3, 4)]
        max_out = max(int(optional[0]), 0) if optional[0] is not None else 0
        iou = float(optional[1]) if optional[1] is not None else 0.0
        selected = non_max_suppression(boxes, scores, max_out, iou, optional[2], center)
        node.define_constant(selected)


OPS = (AffineGrid(), GridSample(), NonMaxSuppression(), RoiAlign())

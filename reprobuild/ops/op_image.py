"""The ONNX half of :mod:`reprobuild.layers.op_image` (whose docstring says what the layers compute): the ONNX versions
each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reprobuild.layers import op_image as layer
from reprobuild.layers.base import ints, scalar
from reprobuild.ops._image_nms import non_max_suppression
from reprobuild.ops._image_roi import adaptive_grid
from reprobuild.ops.attr import Attr
from reprobuild.ops.base import BuildTimeOp, Node, OpDef

_MODES = {"bilinear": "linear", "bicubic": "cubic", "nearest": "nearest", "linear": "linear", "cubic": "cubic"}


_PADDINGS = ("zeros", "border", "reflection")


class GridSample(OpDef, layer.GridSample):
    versions = (16, 20, 22)
    # ONNX's default is "bilinear" in version 16 and "linear" from 20 (one mode renamed): convert fills in the
    # version's name.
    attribute_overrides = {"mode": Attr("string")}

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


class AffineGrid(OpDef, layer.AffineGrid):
    versions = (20,)

    def convert(self, node: Node) -> None:
        size = ints(node.static(1, "the output size (N, C, H, W) or (N, C, D, H, W)"))
        align = int(node.attr("align_corners") != 0)
        if len(size) not in (4, 5) or min(size) < 1:
            raise node.fail(f"size {list(size)} should be (N, C, H, W) or (N, C, D, H, W) of positive values")
        if align and 1 in size[2:]:
            raise node.fail(f"align_corners=1 over a spatial size of 1 (size {list(size)}) is -1 in ONNX's reference "
                            "and 1 in onnxruntime; use align_corners=0 or a size above 1")
        node.emit({"size": tuple(size), "align_corners": align}, inputs=[0])


class RoiAlign(OpDef, layer.RoiAlign):
    versions = (10, 16, 22)

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

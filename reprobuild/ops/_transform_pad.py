"""The ONNX half of :mod:`reprobuild.layers._transform_pad` (whose docstring says what the layers compute): the ONNX
versions each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reprobuild.core.dtypes import ALL
from reprobuild.layers import _transform_pad as layer
from reprobuild.layers._transform_pad import MODES
from reprobuild.layers.base import Attrs, OpError, TensorType, axes_in_range, ints, scalar
from reprobuild.ops.base import Node, OpDef


def fill_value(value: Any, dtype: str) -> int | float:
    """A pad constant as the canonical attribute: int for integer and bool data, float otherwise."""
    if dtype == "bool" or dtype.startswith(("int", "uint")):
        return int(value)
    return float(value)


class Pad(OpDef, layer.Pad):
    versions = (2, 11, 13, 18, 19, 21, 23, 24, 25)

    def convert(self, node: Node) -> None:
        x = node.input(0)
        assert x is not None
        mode = str(node.attr("mode"))
        if mode not in MODES or (mode == "wrap" and node.version < 19):
            modes = MODES if node.version >= 19 else MODES[:3]
            raise node.fail(f"mode {mode!r} is not one Pad version {node.version} has: {', '.join(modes)}")
        if node.version < 11:
            if not node.has_attr("pads"):
                raise node.fail("the attribute 'pads' is required")
            raw, axes = ints(node.attr("pads")), tuple(range(x.rank))
        else:
            raw = ints(node.static(1, "the pads"))
            given = node.input(3) is not None
            axes = axes_in_range(ints(node.static(3, "the axes")), x.rank) if given else tuple(range(x.rank))
        if len(raw) != 2 * len(axes):
            raise node.fail(f"pads has {len(raw)} values; it needs 2 per padded axis ({2 * len(axes)})")
        begin, end = [0] * x.rank, [0] * x.rank
        for i, a in enumerate(axes):
            begin[a], end[a] = raw[i], raw[len(axes) + i]
        attrs = {"mode": mode, "pads": (*begin, *end), "value": fill_value(0, x.dtype)}
        if mode == "constant" and node.version < 11:
            attrs["value"] = fill_value(node.attr("value"), x.dtype)
        elif mode == "constant" and node.input(2) is not None:
            known = node.const(2)
            if known is None:
                node.emit(attrs, inputs=[0, 2])
                return
            attrs["value"] = fill_value(scalar(known), x.dtype)
        node.emit(attrs, inputs=[0])


class CenterCropPad(OpDef):
    op, versions, lowered_to = "CenterCropPad", (18,), "Pad"
    num_inputs = (2, 2)
    dtypes = ALL

    def convert(self, node: Node) -> None:
        x = node.input(0)
        assert x is not None
        axes = axes_in_range(node.attr("axes"), x.rank) if node.has_attr("axes") else tuple(range(x.rank))
        target = ints(node.static(1, "the target shape"))
        if len(target) != len(axes):
            raise node.fail(f"shape has {len(target)} values for {len(axes)} axes {list(axes)}")
        begin, end = [0] * x.rank, [0] * x.rank
        for a, size in zip(axes, target):
            if size < 0:
                raise node.fail(f"shape {list(target)} has a negative size")
            diff = size - x.shape[a]  # > 0 pads, < 0 crops; the odd element goes to the end either way
            begin[a] = diff // 2 if diff >= 0 else -((-diff) // 2)
            end[a] = diff - begin[a]
        node.emit({"mode": "constant", "pads": (*begin, *end), "value": fill_value(0, x.dtype)}, inputs=[0],
                  op="Pad")

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        raise OpError("CenterCropPad becomes a Pad layer when converted; it never is a layer itself")

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        raise OpError("CenterCropPad becomes a Pad layer when converted; it never is a layer itself")

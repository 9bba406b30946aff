"""The ONNX half of :mod:`reprobuild.layers._index_scatter` (whose docstring says what the layers compute): the ONNX
versions each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from typing import Any, ClassVar

from reprobuild.layers import _index_scatter as layer
from reprobuild.layers.base import OpError, axis_in_range
from reprobuild.ops.base import Node, OpDef

REDUCTIONS = ("none", "add", "mul", "max", "min")


#: The first version of ScatterElements and ScatterND that has each reduction.
_REDUCTION_SINCE = {"none": 11, "add": 16, "mul": 16, "max": 18, "min": 18}


def check_reduction(op: str, version: int, reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise OpError(f"reduction {reduction!r} is not one of {', '.join(REDUCTIONS)}")
    if version < _REDUCTION_SINCE[reduction]:
        raise OpError(f"reduction {reduction!r} needs {op} version {_REDUCTION_SINCE[reduction]} or later; "
                      f"this node is version {version}")
    return reduction


class ScatterElements(OpDef, layer.ScatterElements):
    versions: ClassVar[tuple[int, ...]] = (11, 13, 16, 18)

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        x = node.input(0)
        assert x is not None
        return {"axis": axis_in_range(int(attrs["axis"]), x.rank),
                "reduction": check_reduction(node.op_type, node.version, str(attrs.get("reduction", "none")))}


class Scatter(ScatterElements):
    """Deprecated (opset 11) alias of ScatterElements without reduction: converted to a ScatterElements layer."""

    op, versions, lowered_to = "Scatter", (9, 11), "ScatterElements"

    def convert(self, node: Node) -> None:
        x = node.input(0)
        assert x is not None
        node.emit({"axis": axis_in_range(int(node.attr("axis")), x.rank), "reduction": "none"},
                  op="ScatterElements")


class ScatterND(OpDef, layer.ScatterND):
    versions = (11, 13, 16, 18)

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        return {"reduction": check_reduction(node.op_type, node.version, str(attrs.get("reduction", "none")))}


class TensorScatter(OpDef, layer.TensorScatter):
    versions = (24,)

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        x = node.input(0)
        assert x is not None
        mode = str(attrs["mode"])
        if mode not in ("linear", "circular"):
            raise OpError(f"mode {mode!r} is not one of linear, circular")
        axis = axis_in_range(int(attrs["axis"]), x.rank)
        if axis == 0:
            raise OpError("axis 0 is the batch axis; the sequence axis must be another one")
        return {"axis": axis, "mode": mode}

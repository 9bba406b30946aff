"""The ONNX half of :mod:`reprobuild.layers.op_cast` (whose docstring says what the layers compute): the ONNX versions
each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from typing import Any, ClassVar

from reprobuild.layers import op_cast as layer
from reprobuild.layers._cast_narrow import E8M0, FLOAT8
from reprobuild.layers.base import OpError
from reprobuild.layers.op_cast import ROUND_MODES
from reprobuild.ops.base import Node, OpDef
from reprobuild.ops.onnx_types import dtype_of_elem_type


def cast_attrs(node: Node, to: str) -> dict[str, Any]:
    """The canonical attributes of a Cast (or CastLike) node that casts to ``to``."""
    saturate = int(node.attr("saturate")) if node.version >= 19 else 1
    round_mode = str(node.attr("round_mode")) if node.version >= 24 else "up"
    if round_mode not in ROUND_MODES:
        raise node.fail(f"round_mode {round_mode!r} is not one of {', '.join(ROUND_MODES)}")
    return {"to": to, "saturate": int(saturate != 0) if to in (*FLOAT8, E8M0) else 1,
            "round_mode": round_mode if to == E8M0 else "up"}


class Cast(OpDef, layer.Cast):
    versions: ClassVar[tuple[int, ...]] = (6, 9, 13, 19, 21, 23, 24, 25, 28)

    def convert(self, node: Node) -> None:
        try:
            to = dtype_of_elem_type(int(node.attr("to")), "the target type 'to'")
        except OpError as exc:
            raise node.fail(str(exc)) from None
        node.emit(cast_attrs(node, to), inputs=[0])


class CastLike(Cast):
    """Becomes a Cast to the dtype of ``target_type`` (whose values are never read)."""

    op, versions, lowered_to = "CastLike", (15, 19, 21, 23, 24, 25), "Cast"
    num_inputs = (2, 2)

    def convert(self, node: Node) -> None:
        target = node.input(1)
        assert target is not None
        node.emit(cast_attrs(node, target.dtype), inputs=[0], op="Cast")


OPS = (Cast(), CastLike())

"""The ONNX half of :mod:`reprobuild.layers._quant_linear` (whose docstring says what the layers compute): the ONNX
versions each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from reprobuild.core.dtypes import FLOATS
from reprobuild.layers import _quant_linear as layer
from reprobuild.layers._quant_common import (
    E8M0,
    FLOAT8,
    granularity,
)
from reprobuild.layers.base import OpError
from reprobuild.ops.attr import ABSENT
from reprobuild.ops.base import Node, OpDef
from reprobuild.ops.onnx_types import dtype_of_elem_type


def _axis_block(node: Node) -> tuple[int | None, int]:
    axis = node.attr("axis")
    block = node.attr("block_size")
    return (None if axis is ABSENT else int(axis)), (0 if block is ABSENT else int(block))


def _elem_type(node: Node, key: str) -> str | None:
    """A dtype-valued attribute (an ONNX element type number) as a name; None when absent or 0."""
    value = node.attr(key)
    if value is ABSENT or int(value) == 0:
        return None
    try:
        return dtype_of_elem_type(int(value), f"attribute {key}")
    except OpError as exc:
        raise node.fail(str(exc)) from None


class QuantizeLinear(OpDef, layer.QuantizeLinear):
    versions = (10, 13, 19, 21, 23, 24, 25, 28)

    def convert(self, node: Node) -> None:
        x, scale, zero = node.input(0), node.input(1), node.input(2)
        assert x is not None and scale is not None
        out = _elem_type(node, "output_dtype")
        if zero is not None and out is not None and out != zero.dtype:
            raise node.fail(f"output_dtype {out} differs from the zero point's dtype {zero.dtype}")
        out = zero.dtype if zero is not None else out or "uint8"
        precision = _elem_type(node, "precision")
        if precision is None:
            if x.dtype == "int32":
                precision = "float64"
            elif scale.dtype == E8M0:
                precision = "float32"  # a power of two: every float divides by it exactly (the reference's too)
            elif x.dtype != scale.dtype:
                raise node.fail(f"x is {x.dtype} but y_scale {scale.dtype}: give the precision attribute to say "
                                "which type the division runs in")
            else:
                precision = x.dtype
        if precision not in FLOATS:
            raise node.fail(f"precision {precision} is not a float type")
        axis, block = granularity(x, scale, *_axis_block(node))
        # saturate only means something for float8 results: elsewhere it is 1, so equal layers compare equal
        saturate = int(bool(node.attr("saturate"))) if node.version >= 19 and out in FLOAT8 else 1
        node.emit({"axis": axis, "block_size": block, "output_dtype": out, "precision": precision,
                   "saturate": saturate})


class DequantizeLinear(OpDef, layer.DequantizeLinear):
    versions = (10, 13, 19, 21, 23, 24, 25, 28)

    def convert(self, node: Node) -> None:
        x, scale = node.input(0), node.input(1)
        assert x is not None and scale is not None
        out = _elem_type(node, "output_dtype") or scale.dtype
        if out not in ("float32", "float16", "bfloat16"):
            raise node.fail(f"the output dtype {out} is not float32, float16 or bfloat16 (with a {E8M0} scale, "
                            "output_dtype must say which)")
        axis, block = granularity(x, scale, *_axis_block(node))
        node.emit({"axis": axis, "block_size": block, "output_dtype": out})


class DynamicQuantizeLinear(OpDef, layer.DynamicQuantizeLinear):
    versions = (11,)

"""The ONNX half of :mod:`reprobuild.layers.op_logic` (whose docstring says what the layers compute): the ONNX versions
each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from typing import Any

from reprobuild.core.dtypes import np_dtype
from reprobuild.layers import op_logic as layer
from reprobuild.layers.op_logic import _BITCAST_TYPES
from reprobuild.ops.base import Node, OpDef
from reprobuild.ops.onnx_types import dtype_of_elem_type


class Equal(OpDef, layer.Equal):
    versions = (7, 11, 13, 19)


class Greater(OpDef, layer.Greater):
    versions = (7, 9, 13)


class GreaterOrEqual(OpDef, layer.GreaterOrEqual):
    versions = (12, 16)


class Less(OpDef, layer.Less):
    versions = (7, 9, 13)


class LessOrEqual(OpDef, layer.LessOrEqual):
    versions = (12, 16)


class And(OpDef, layer.And):
    versions = (7,)


class Or(OpDef, layer.Or):
    versions = (7,)


class Xor(OpDef, layer.Xor):
    versions = (7,)


class Not(OpDef, layer.Not):
    versions = (1,)


class BitShift(OpDef, layer.BitShift):
    versions = (11, 28)

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["direction"] not in ("LEFT", "RIGHT"):
            raise node.fail(f"direction is {attrs['direction']!r}; ONNX defines 'LEFT' and 'RIGHT'")
        return {"direction": str(attrs["direction"])}


class BitwiseAnd(OpDef, layer.BitwiseAnd):
    versions = (18,)


class BitwiseNot(OpDef, layer.BitwiseNot):
    versions = (18,)


class BitwiseOr(OpDef, layer.BitwiseOr):
    versions = (18,)


class BitwiseXor(OpDef, layer.BitwiseXor):
    versions = (18,)


class Where(OpDef, layer.Where):
    versions = (9, 16)


class BitCast(OpDef, layer.BitCast):
    versions = (26,)

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        to = dtype_of_elem_type(int(attrs["to"]), "the 'to' type")
        x = node.input(0)
        assert x is not None
        for what, dtype in (("the input", x.dtype), ("the 'to' type", to)):
            if dtype not in _BITCAST_TYPES:
                raise node.fail(f"{what} is {dtype}; BitCast supports types stored in whole bytes: "
                                f"{', '.join(_BITCAST_TYPES)} (the 4- and 2-bit types are stored one per byte)")
        if np_dtype(to).itemsize != np_dtype(x.dtype).itemsize:
            raise node.fail(f"BitCast from {x.dtype} ({8 * np_dtype(x.dtype).itemsize} bits) to {to} "
                            f"({8 * np_dtype(to).itemsize} bits): the widths must be equal")
        return {"to": to}


OPS = (And(), BitCast(), BitShift(), BitwiseAnd(), BitwiseNot(), BitwiseOr(), BitwiseXor(), Equal(), Greater(),
       GreaterOrEqual(), Less(), LessOrEqual(), Not(), Or(), Where(), Xor())

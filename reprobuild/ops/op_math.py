"""The ONNX half of :mod:`reprobuild.layers.op_math` (whose docstring says what the layers compute): the ONNX versions
each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from typing import Any

from reprobuild.layers import op_math as layer
from reprobuild.ops._math_mod import Mod
from reprobuild.ops._math_pow import Pow
from reprobuild.ops.base import Node, OpDef

#: Versions by the opset that introduced the op (or its opset-7 form).
_V6, _V7, _V9 = (6, 13), (7, 22), (9, 22)


class Abs(OpDef, layer.Abs):
    versions = _V6


class Acos(OpDef, layer.Acos):
    versions = _V7


class Acosh(OpDef, layer.Acosh):
    versions = _V9


class Asin(OpDef, layer.Asin):
    versions = _V7


class Asinh(OpDef, layer.Asinh):
    versions = _V9


class Atan(OpDef, layer.Atan):
    versions = _V7


class Atanh(OpDef, layer.Atanh):
    versions = _V9


class Ceil(OpDef, layer.Ceil):
    versions = _V6


class Cos(OpDef, layer.Cos):
    versions = _V7


class Cosh(OpDef, layer.Cosh):
    versions = _V9


class Erf(OpDef, layer.Erf):
    versions = (9, 13)


class Exp(OpDef, layer.Exp):
    versions = _V6


class Floor(OpDef, layer.Floor):
    versions = _V6


class IsInf(OpDef, layer.IsInf):
    versions = (10, 20)

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        return {key: int(int(value) != 0) for key, value in attrs.items()}


class IsNaN(OpDef, layer.IsNaN):
    versions = (9, 13, 20)


class Log(OpDef, layer.Log):
    versions = _V6


class Neg(OpDef, layer.Neg):
    versions = _V6


class Reciprocal(OpDef, layer.Reciprocal):
    versions = _V6


class Round(OpDef, layer.Round):
    versions = (11, 22)


class Sign(OpDef, layer.Sign):
    versions = (9, 13)


class Sin(OpDef, layer.Sin):
    versions = _V7


class Sinh(OpDef, layer.Sinh):
    versions = _V9


class Sqrt(OpDef, layer.Sqrt):
    versions = _V6


class Tan(OpDef, layer.Tan):
    versions = _V7


class Tanh(OpDef, layer.Tanh):
    versions = _V6


OPS = (Abs(), Acos(), Acosh(), Asin(), Asinh(), Atan(), Atanh(), Ceil(), Cos(), Cosh(), Erf(), Exp(), Floor(),
       IsInf(), IsNaN(), Log(), Mod(), Neg(), Pow(), Reciprocal(), Round(), Sign(), Sin(), Sinh(), Sqrt(), Tan(),
       Tanh())

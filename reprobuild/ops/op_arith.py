"""The ONNX half of :mod:`reprobuild.layers.op_arith` (whose docstring says what the layers compute): the ONNX versions
each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from reprobuild.layers import op_arith as layer
from reprobuild.ops.base import OpDef

_VERSIONS = (7, 13, 14)


class Add(OpDef, layer.Add):
    versions = _VERSIONS


class Sub(OpDef, layer.Sub):
    versions = _VERSIONS


class Mul(OpDef, layer.Mul):
    versions = _VERSIONS


class Div(OpDef, layer.Div):
    versions = _VERSIONS


class Sum(OpDef, layer.Sum):
    versions = (6, 8, 13)


class Mean(OpDef, layer.Mean):
    versions = (6, 8, 13)


class Max(OpDef, layer.Max):
    versions = (6, 8, 12, 13)


class Min(OpDef, layer.Min):
    versions = (6, 8, 12, 13)


OPS = (Add(), Div(), Max(), Mean(), Min(), Mul(), Sub(), Sum())

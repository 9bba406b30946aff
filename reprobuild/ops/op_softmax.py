"""The ONNX half of :mod:`reprobuild.layers.op_softmax` (whose docstring says what the layers compute): the ONNX
versions each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from typing import Any

from reprobuild.layers import op_softmax as layer
from reprobuild.layers.base import axis_in_range
from reprobuild.ops.attr import Attr
from reprobuild.ops.base import Node, OpDef


class _Normalize(OpDef, layer._Normalize):
    versions = (1, 11, 13)
    # ONNX's default is 1 before version 13 and -1 from 13: canonical_attrs fills in the version's.
    attribute_overrides = {"axis": Attr("int")}

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        legacy = node.version < 13  # flattens to 2-D at axis; 13+ normalizes along one axis
        x = node.input(0)
        assert x is not None
        axis = int(attrs["axis"]) if node.has_attr("axis") else (1 if legacy else -1)
        return {"axis": axis_in_range(axis, max(x.rank, 1)), "coerce_2d": int(legacy)}


class Softmax(_Normalize, layer.Softmax):
    pass


class LogSoftmax(_Normalize, layer.LogSoftmax):
    pass


class Hardmax(_Normalize, layer.Hardmax):
    pass


OPS = (Hardmax(), LogSoftmax(), Softmax())

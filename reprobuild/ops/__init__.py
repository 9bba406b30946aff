"""Op definitions: how ONNX nodes become layers. One module per op family (``op_*.py``, the same names as the
layer modules of :mod:`reprobuild.layers`, listed once in ``reprobuild/layers/_layer_list.py``).

See :mod:`reprobuild.ops.base` for what a definition holds; an op definition is a layer definition
(:mod:`reprobuild.layers`) plus its ONNX half.
"""

from __future__ import annotations

from reprobuild.layers.base import Attrs, OpError, TensorType
from reprobuild.ops.attr import ABSENT, Attr
from reprobuild.ops.base import BuildTimeOp, Node, OpDef, StaticInputError
from reprobuild.ops.registry import all_ops, find_op, get_op, infer_types

__all__ = [
    "ABSENT",
    "Attr",
    "Attrs",
    "BuildTimeOp",
    "Node",
    "OpDef",
    "OpError",
    "StaticInputError",
    "TensorType",
    "all_ops",
    "find_op",
    "get_op",
    "infer_types",
]

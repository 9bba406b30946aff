"""Op definitions: one module per op or op family (``op_*.py``), listed in ``_op_list.py``.

See :mod:`reprobuild.ops.base` for what a definition holds, and :mod:`reprobuild.ops.families` for the family
base classes that make a new elementwise op a few lines.
"""

from __future__ import annotations

from reprobuild.ops.base import (
    ABSENT,
    Attr,
    Attrs,
    BuildTimeOp,
    Node,
    OpDef,
    OpError,
    StaticInputError,
    TensorType,
)
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

"""The ONNX half of :mod:`reprobuild.layers._index_gather` (whose docstring says what the layers compute): the ONNX
versions each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from reprobuild.core.dtypes import ALL
from reprobuild.layers import _index_gather as layer
from reprobuild.layers.base import axis_in_range
from reprobuild.ops._constant_limits import check_constant_size
from reprobuild.ops.attr import ABSENT
from reprobuild.ops.base import BuildTimeOp, Node, OpDef


class _AxisGather(OpDef, layer._AxisGather):
    versions: ClassVar[tuple[int, ...]] = (11, 13)

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        x = node.input(0)
        assert x is not None
        return {"axis": axis_in_range(int(attrs["axis"]), x.rank)}


class Gather(_AxisGather, layer.Gather):
    versions = (1, 11, 13)


class GatherElements(_AxisGather, layer.GatherElements):
    pass


class GatherND(OpDef, layer.GatherND):
    versions = (11, 12, 13)

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        return {"batch_dims": int(attrs.get("batch_dims", 0))}


class Compress(OpDef, layer.Compress):
    versions = (9, 11, 28)

    def convert(self, node: Node) -> None:
        x, cond_type = node.input(0), node.input(1)
        assert x is not None and cond_type is not None
        if cond_type.dtype != "bool":
            raise node.fail(f"the condition has dtype {cond_type.dtype}; it must be bool")
        condition = np.asarray(node.static(1, "the condition, which decides the output shape"))
        if condition.ndim != 1:
            raise node.fail(f"the condition must be 1-D; it has shape {list(condition.shape)}")
        axis = node.attr("axis")
        flatten = axis is ABSENT
        axis = 0 if flatten else axis_in_range(int(axis), x.rank)
        n = x.size if flatten else x.shape[axis]
        if condition[n:].any():
            raise node.fail(f"the condition selects position {n + int(np.flatnonzero(condition[n:])[0])}, "
                            f"beyond the {n} {'elements' if flatten else 'slices'} it selects from")
        selected = tuple(int(i) for i in np.flatnonzero(condition[:n]))
        node.emit({"axis": axis, "flatten": int(flatten), "selected": selected}, inputs=[0])


class NonZero(BuildTimeOp):
    """Indices of the nonzero elements, shape (rank, count): the count is only known from the values."""

    op, versions = "NonZero", (9, 13)
    dtypes = ALL

    def convert(self, node: Node) -> None:
        x = node.const(0)
        if x is None:
            raise node.fail("its output shape (rank, number of nonzero elements) depends on the input's values, "
                            "which are only known at run time; an engine has fixed shapes. NonZero is computed "
                            "when the network is built only if its input is a constant")
        if x.ndim == 0:
            raise node.fail("a scalar input is not supported (ONNX and onnxruntime disagree on its output shape)")
        check_constant_size(node, (x.ndim, int(np.count_nonzero(x))), "int64")
        node.define_constant(np.stack(np.nonzero(x != 0)).astype(np.int64))

"""The ONNX half of :mod:`reprobuild.layers.op_reduce` (whose docstring says what the layers compute): the ONNX versions
each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reprobuild.layers import op_reduce as layer
from reprobuild.layers.base import TensorType, axis_in_range, ints
from reprobuild.ops.base import Node, OpDef


def _resolve_axes(node: Node, given: Sequence[int], x: TensorType) -> tuple[int, ...]:
    """The axes made non-negative and sorted; each must be an axis of ``x``, named once."""
    outside = [a for a in given if not -x.rank <= a < x.rank]
    if outside:
        raise node.fail(f"axes {list(given)} name axis {outside[0]}, outside [{-x.rank}, {x.rank - 1}] for the "
                        f"rank-{x.rank} input {list(x.shape)}")
    axes = tuple(sorted({a % x.rank for a in given}))
    if len(axes) != len(given):
        raise node.fail(f"axes {list(given)} name an axis twice (the input has rank {x.rank})")
    return axes


class _Reduce(OpDef, layer._Reduce):
    def convert(self, node: Node) -> None:
        x = node.input(0)
        assert x is not None
        keepdims = int(int(node.attr("keepdims")) != 0)
        if node.version >= self.axes_input_since:
            given = None if node.input(1) is None else ints(node.static(1, "the axes to reduce"))
            noop = int(node.attr("noop_with_empty_axes")) != 0
        else:
            if node.num_inputs > 1:
                raise node.fail(f"version {node.version} takes the axes as an attribute, not as input 1; "
                                f"axes became an input in version {self.axes_input_since}")
            given = ints(node.attr("axes")) if node.has_attr("axes") else None
            noop = False
        if given:
            axes = _resolve_axes(node, given, x)
        elif not noop:
            axes = tuple(range(x.rank))
        elif self.composite:
            axes = ()
        else:
            node.emit({}, inputs=[0], op="Identity")
            return
        node.emit({"axes": axes, "keepdims": keepdims}, inputs=[0])


class ReduceSum(_Reduce, layer.ReduceSum):
    versions = (1, 11, 13)


class ReduceMean(_Reduce, layer.ReduceMean):
    versions = (1, 11, 13, 18)


class ReduceProd(_Reduce, layer.ReduceProd):
    versions = (1, 11, 13, 18)


class _Extreme(_Reduce, layer._Extreme):
    versions = (1, 11, 12, 13, 18, 20)


class ReduceMax(_Extreme, layer.ReduceMax):
    pass


class ReduceMin(_Extreme, layer.ReduceMin):
    pass


class ReduceL1(_Reduce, layer.ReduceL1):
    versions = (1, 11, 13, 18)


class ReduceL2(_Reduce, layer.ReduceL2):
    versions = (1, 11, 13, 18)


class ReduceSumSquare(_Reduce, layer.ReduceSumSquare):
    versions = (1, 11, 13, 18)


class ReduceLogSum(_Reduce, layer.ReduceLogSum):
    versions = (1, 11, 13, 18, 28)


class ReduceLogSumExp(_Reduce, layer.ReduceLogSumExp):
    versions = (1, 11, 13, 18, 28)


class _ArgExtreme(OpDef, layer._ArgExtreme):
    versions = (1, 11, 12, 13)

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        x = node.input(0)
        assert x is not None
        return {"axis": axis_in_range(int(attrs["axis"]), x.rank), "keepdims": int(int(attrs["keepdims"]) != 0),
                "select_last_index": int(int(attrs.get("select_last_index", 0)) != 0)}


class ArgMax(_ArgExtreme, layer.ArgMax):
    pass


class ArgMin(_ArgExtreme, layer.ArgMin):
    pass


OPS = (ArgMax(), ArgMin(), ReduceL1(), ReduceL2(), ReduceLogSum(), ReduceLogSumExp(), ReduceMax(), ReduceMean(),
       ReduceMin(), ReduceProd(), ReduceSum(), ReduceSumSquare())

"""The ONNX half of :mod:`reprobuild.layers.op_cumulative` (whose docstring says what the layers compute): the ONNX
versions each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from reprobuild.layers import op_cumulative as layer
from reprobuild.layers.base import axis_in_range, ints
from reprobuild.ops.base import Node, OpDef


def _single_int(node: Node, i: int, what: str) -> int:
    """A static input that holds exactly one integer."""
    t = node.input(i)
    if t is not None and t.dtype not in ("int32", "int64"):
        raise node.fail(f"input {i} ({what}) must be int32 or int64; it is {t.dtype}")
    value = ints(node.static(i, what))
    if len(value) != 1:
        raise node.fail(f"input {i} ({what}) must hold one value; it holds {len(value)}")
    return value[0]


class _Scan(OpDef, layer._Scan):
    def convert(self, node: Node) -> None:
        x = node.input(0)
        assert x is not None
        axis = axis_in_range(_single_int(node, 1, "the axis"), x.rank)
        node.emit({"axis": axis, "exclusive": int(int(node.attr("exclusive")) != 0),
                   "reverse": int(int(node.attr("reverse")) != 0)}, inputs=[0])


class CumSum(_Scan, layer.CumSum):
    versions = (11, 14)


class CumProd(_Scan, layer.CumProd):
    versions = (26,)


class TopK(OpDef, layer.TopK):
    versions = (1, 10, 11, 24)

    def convert(self, node: Node) -> None:
        x = node.input(0)
        assert x is not None
        if node.version < 10:
            if node.num_inputs != 1:
                raise node.fail(f"version {node.version} takes k as an attribute and one input; it has "
                                f"{node.num_inputs} inputs")
            k = int(node.attr("k"))
        else:
            if node.num_inputs != 2:
                raise node.fail(f"version {node.version} takes k as input 1 (a one-element int64 tensor)")
            k = _single_int(node, 1, "K, how many values to keep")
        axis = axis_in_range(int(node.attr("axis")), x.rank)
        if not 0 <= k <= x.shape[axis]:
            raise node.fail(f"k={k} is outside [0, {x.shape[axis]}], the size of axis {axis} of the input "
                            f"{list(x.shape)}")
        largest = int(node.attr("largest")) != 0 if node.version >= 11 else True
        node.emit({"axis": axis, "k": k, "largest": int(largest)}, inputs=[0],
                  n_outputs=2 if node.output_used(1) else 1)


OPS = (CumProd(), CumSum(), TopK())

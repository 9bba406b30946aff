"""Scans and selections along one axis: CumSum, CumProd and TopK.

CumSum and CumProd take the axis as input 1, a one-element int32/int64 tensor read when the engine is built;
canonical attributes ``axis`` (non-negative), ``exclusive`` and ``reverse`` (0 or 1). An exclusive scan starts
from the identity (0 or 1) and stops before the last element; a reverse one runs from the end. Integers wrap,
as in onnxruntime; float16 and bfloat16 are accumulated in float32 and rounded once.

TopK takes k as an attribute in version 1 and as input 1 (a one-element int64 tensor, read when the engine is
built) from version 10; canonical attributes ``axis``, ``k`` and ``largest``. Outputs are the values and their
int64 indices, in sorted order (largest first with ``largest=1``), equal values ordered by smaller index first
as ONNX specifies. ``sorted=0`` leaves the order to the implementation, so the sorted order is always a right
answer and ``sorted`` is not kept. Selection is a stable sort (NumPy's ``kind="stable"``; CuPy's sorts are
always stable), so ties and results repeat run to run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from reprobuild.core.dtypes import FLOATS, INTEGERS
from reprobuild.ops.base import Attrs, Node, OpDef, OpError, TensorType, axis_in_range, ints
from reprobuild.ops.families import float_compute_type


def _along(ndim: int, axis: int, index: slice) -> tuple[slice, ...]:
    """An indexing tuple that applies ``index`` along ``axis`` and keeps every other axis whole."""
    return tuple(index if d == axis else slice(None) for d in range(ndim))


def _single_int(node: Node, i: int, what: str) -> int:
    """A static input that holds exactly one integer."""
    t = node.input(i)
    if t is not None and t.dtype not in ("int32", "int64"):
        raise node.fail(f"input {i} ({what}) must be int32 or int64; it is {t.dtype}")
    value = ints(node.static(i, what))
    if len(value) != 1:
        raise node.fail(f"input {i} ({what}) must hold one value; it holds {len(value)}")
    return value[0]


class _Scan(OpDef):
    """Base of CumSum and CumProd: ``scan`` is the inclusive scan along an axis, ``identity`` its start value."""

    num_inputs = (2, 2)
    dtypes = ("int32", "int64", "uint32", "uint64", *FLOATS)
    identity: ClassVar[int]

    def convert(self, node: Node) -> None:
        x = node.input(0)
        assert x is not None
        axis = axis_in_range(_single_int(node, 1, "the axis"), x.rank)
        node.emit({"axis": axis, "exclusive": int(int(node.attr("exclusive")) != 0),
                   "reverse": int(int(node.attr("reverse")) != 0)}, inputs=[0])

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        axis_in_range(int(attrs["axis"]), inputs[0].rank)
        return [inputs[0]]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x = inputs[0]
        axis = int(attrs["axis"])
        v = x.astype(float_compute_type(xp, x), copy=False)
        if attrs["reverse"]:
            v = xp.flip(v, axis)
        acc = self.scan(xp, v, axis)
        if attrs["exclusive"] and x.shape[axis] > 0:
            first = xp.full(acc[_along(x.ndim, axis, slice(0, 1))].shape, self.identity, dtype=acc.dtype)
            acc = xp.concatenate([first, acc[_along(x.ndim, axis, slice(0, -1))]], axis=axis)
        if attrs["reverse"]:
            acc = xp.flip(acc, axis)
        return [xp.ascontiguousarray(acc).astype(x.dtype, copy=False)]

    def scan(self, xp: Any, v: Any, axis: int) -> Any:
        raise NotImplementedError


class CumSum(_Scan):
    op, versions, identity = "CumSum", (11, 14), 0
    version = 2

    def scan(self, xp: Any, v: Any, axis: int) -> Any:
        return xp.cumsum(v, axis=axis, dtype=v.dtype)


class CumProd(_Scan):
    op, versions, identity = "CumProd", (26,), 1
    version = 2

    def scan(self, xp: Any, v: Any, axis: int) -> Any:
        return xp.cumprod(v, axis=axis, dtype=v.dtype)


def _stable_argsort(xp: Any, v: Any, axis: int) -> Any:
    if xp.__name__ == "numpy":
        return xp.argsort(v, axis=axis, kind="stable")
    return xp.argsort(v, axis=axis)  # CuPy's sort is always stable and takes no kind


class TopK(OpDef):
    op, versions = "TopK", (1, 10, 11, 24)
    version = 2
    num_inputs = (1, 2)
    num_outputs = (2, 2)
    dtypes = INTEGERS + FLOATS

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

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        x = inputs[0]
        axis, k = int(attrs["axis"]), int(attrs["k"])
        if not 0 <= axis < x.rank:  # canonical (convert resolves a negative one): compute indexes with it as is
            raise OpError(f"axis {axis} is not an axis of the rank-{x.rank} input (0 to {x.rank - 1})")
        if not 0 <= k <= x.shape[axis]:
            raise OpError(f"k={k} is outside [0, {x.shape[axis]}], the size of axis {axis} of the input "
                          f"{list(x.shape)}")
        shape = tuple(k if d == axis else n for d, n in enumerate(x.shape))
        return [TensorType(shape, x.dtype), TensorType(shape, "int64")]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x = inputs[0]
        axis, k = int(attrs["axis"]), int(attrs["k"])
        key = x.astype(float_compute_type(xp, x), copy=False)  # exact: only comparisons
        if attrs["largest"]:
            # Descending with ties by smaller index: sort the reversed axis ascending (stable), read it backwards.
            order = (x.shape[axis] - 1) - xp.flip(_stable_argsort(xp, xp.flip(key, axis), axis), axis)
        else:
            order = _stable_argsort(xp, key, axis)
        index = xp.ascontiguousarray(order[_along(x.ndim, axis, slice(0, k))]).astype(xp.int64, copy=False)
        return [xp.take_along_axis(x, index, axis=axis), index]


OPS = (CumProd(), CumSum(), TopK())

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
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType, axis_in_range
from reprobuild.layers.families import float_compute_type


def _along(ndim: int, axis: int, index: slice) -> tuple[slice, ...]:
    """An indexing tuple that applies ``index`` along ``axis`` and keeps every other axis whole."""
    return tuple(index if d == axis else slice(None) for d in range(ndim))


class _Scan(LayerDef):
    """Base of CumSum and CumProd: ``scan`` is the inclusive scan along an axis, ``identity`` its start value."""

    num_inputs = (2, 2)
    dtypes = ("int32", "int64", "uint32", "uint64", *FLOATS)
    identity: ClassVar[int]

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
    op, identity = "CumSum", 0
    version = 2

    def scan(self, xp: Any, v: Any, axis: int) -> Any:
        return xp.cumsum(v, axis=axis, dtype=v.dtype)


class CumProd(_Scan):
    op, identity = "CumProd", 1
    version = 2

    def scan(self, xp: Any, v: Any, axis: int) -> Any:
        return xp.cumprod(v, axis=axis, dtype=v.dtype)


def _stable_argsort(xp: Any, v: Any, axis: int) -> Any:
    if xp.__name__ == "numpy":
        return xp.argsort(v, axis=axis, kind="stable")
    return xp.argsort(v, axis=axis)  # CuPy's sort is always stable and takes no kind


class TopK(LayerDef):
    op = "TopK"
    version = 2
    num_inputs = (1, 2)
    num_outputs = (2, 2)
    dtypes = INTEGERS + FLOATS

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


LAYERS = (CumProd(), CumSum(), TopK())

"""Reductions over a set of axes (ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceProd, ReduceL1, ReduceL2,
ReduceLogSum, ReduceLogSumExp, ReduceSumSquare) and along one axis (ArgMax, ArgMin).

Canonical attributes of a ReduceX layer are exactly ``axes`` (sorted, non-negative, every reduced axis listed:
all of them when ONNX says "reduce all") and ``keepdims`` (0 or 1); graph passes (fuse_layernorm) rely on that.
ArgMax and ArgMin have ``axis``, ``keepdims`` and ``select_last_index``.

ONNX subtleties:

- ``axes`` is an attribute up to ReduceSum-11 and the others' version 13, then an optional input (read when the
  engine is built, as a shape input). No axes, or an empty list, means "reduce over every axis", unless
  ``noop_with_empty_axes=1`` (input versions only): then ReduceSum, Mean, Max, Min and Prod are the identity
  (an Identity layer), while the composite reductions (L1, L2, LogSum, LogSumExp, SumSquare) still do their
  elementwise steps (ONNX: "ReduceLogSum returns the Log of input tensor"): canonical ``axes=()``.
- Reducing over an empty set gives the reduction's identity: 0 for the sums, 1 for the product, -inf for
  LogSum and LogSumExp, and for Max (Min) -inf (+inf) for floats, the lowest (highest) integer, False (True)
  for bool. ReduceMean of an empty set is NaN for floats and refused for integers (0 / 0).
- Integer ReduceMean is the exact mean rounded toward zero (onnxruntime and ONNX's reference divide in
  float64 and truncate); integer ReduceL2 sums the squares in float64 and truncates the root, saturating past
  the type's range, as onnxruntime does. Integer sums and products wrap on overflow (ONNX leaves it undefined).
  LogSum and LogSumExp take floats only (ONNX dropped their integer types in opset 28).
- ArgMax/ArgMin pick the first extreme index, or the last with ``select_last_index=1``.

Every reduction is NumPy's or CuPy's: fixed-order (pairwise or tree) sums, so results repeat run to run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from reprobuild.core.dtypes import FLOATS, INTEGERS
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType, axis_in_range
from reprobuild.layers.families import float_compute_type

_SUM_TYPES = ("int32", "int64", "uint32", "uint64", *FLOATS)


_MINMAX_TYPES = ("bool", "int8", "uint8", *_SUM_TYPES)


def _reduced_shape(shape: Sequence[int], axes: Sequence[int], keepdims: bool) -> tuple[int, ...]:
    if keepdims:
        return tuple(1 if d in axes else n for d, n in enumerate(shape))
    return tuple(n for d, n in enumerate(shape) if d not in axes)


def _sum(xp: Any, v: Any, axes: tuple[int, ...], keep: bool) -> Any:
    """Sum in ``v``'s own dtype (integers wrap, as in ONNX's reference); over no axes, ``v`` itself."""
    return xp.sum(v, axis=axes, keepdims=keep, dtype=v.dtype) if axes else v


class _Reduce(LayerDef):
    """Base of the ReduceX ops. ``reduce`` gets the input widened to float32 for float16/bfloat16 and returns
    the result in that type (or the input's); it is rounded once to the input's dtype."""

    dtypes = _SUM_TYPES
    num_inputs = (1, 2)
    #: The op version from which axes is an input (with noop_with_empty_axes) instead of an attribute.
    axes_input_since: ClassVar[int] = 18
    #: Whether the op does elementwise work besides reducing (kept when there are no axes and noop is set).
    composite: ClassVar[bool] = False

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        x, axes = inputs[0], tuple(attrs["axes"])
        if axes != tuple(sorted(set(axes))) or any(not 0 <= a < x.rank for a in axes):
            raise OpError(f"axes {list(axes)} must be sorted, distinct axes of the rank-{x.rank} input")
        self.check_empty(x, axes)
        return [TensorType(_reduced_shape(x.shape, axes, bool(attrs["keepdims"])), x.dtype)]

    def check_empty(self, x: TensorType, axes: tuple[int, ...]) -> None:
        """Refuse reductions of an empty set that have no answer."""

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x = inputs[0]
        axes, keep = tuple(attrs["axes"]), bool(attrs["keepdims"])
        y = self.reduce(xp, x.astype(float_compute_type(xp, x), copy=False), axes, keep)
        return [xp.asarray(y).astype(x.dtype, copy=False)]

    def reduce(self, xp: Any, v: Any, axes: tuple[int, ...], keep: bool) -> Any:
        raise NotImplementedError


class ReduceSum(_Reduce):
    op, axes_input_since = "ReduceSum", 13
    version = 2

    def reduce(self, xp: Any, v: Any, axes: tuple[int, ...], keep: bool) -> Any:
        return _sum(xp, v, axes, keep)


class ReduceMean(_Reduce):
    op = "ReduceMean"
    version = 2

    def check_empty(self, x: TensorType, axes: tuple[int, ...]) -> None:
        if x.dtype not in FLOATS and any(x.shape[a] == 0 for a in axes):
            raise OpError(f"the mean of an empty set of {x.dtype} values (input {list(x.shape)}, axes "
                          f"{list(axes)}) divides by zero; only float types give an answer (NaN)")

    def reduce(self, xp: Any, v: Any, axes: tuple[int, ...], keep: bool) -> Any:
        count = int(np.prod([v.shape[a] for a in axes], dtype=np.int64))
        if v.dtype.kind == "f":
            return _sum(xp, v, axes, keep) / count
        return _integer_mean(xp, v, axes, keep, count)


def _integer_mean(xp: Any, v: Any, axes: tuple[int, ...], keep: bool, count: int) -> Any:
    """The exact mean of integers, rounded toward zero, without overflow: with x = q * n + r (floor division),
    sum(x) / n = sum(q) + sum(r) / n, where sum(q) fits the type and sum(r) < n * n fits 64 bits."""
    wide = xp.int64 if v.dtype.kind == "i" else xp.uint64
    n = xp.asarray(count, dtype=wide)
    w = v.astype(wide)
    r = _sum(xp, w % n, axes, keep)
    floor = _sum(xp, w // n, axes, keep) + r // n
    if v.dtype.kind == "u":
        return floor
    return xp.where((floor < 0) & (r % n != 0), floor + 1, floor)


class ReduceProd(_Reduce):
    op = "ReduceProd"
    version = 2

    def reduce(self, xp: Any, v: Any, axes: tuple[int, ...], keep: bool) -> Any:
        return xp.prod(v, axis=axes, keepdims=keep, dtype=v.dtype) if axes else v


class _Extreme(_Reduce):
    dtypes = _MINMAX_TYPES
    largest: ClassVar[bool]

    def reduce(self, xp: Any, v: Any, axes: tuple[int, ...], keep: bool) -> Any:
        if not axes:
            return v
        if v.dtype.kind == "b":
            return (xp.any if self.largest else xp.all)(v, axis=axes, keepdims=keep)
        if v.size == 0:  # the reduction's identity, which NumPy's max and min lack
            if v.dtype.kind == "f":
                fill: Any = -np.inf if self.largest else np.inf
            else:
                info = np.iinfo(v.dtype)
                fill = int(info.min if self.largest else info.max)
            return xp.full(_reduced_shape(v.shape, axes, keep), fill, dtype=v.dtype)
        return (xp.max if self.largest else xp.min)(v, axis=axes, keepdims=keep)


class ReduceMax(_Extreme):
    op, largest = "ReduceMax", True
    version = 2


class ReduceMin(_Extreme):
    op, largest = "ReduceMin", False
    version = 2


class ReduceL1(_Reduce):
    op, composite = "ReduceL1", True
    version = 2

    def reduce(self, xp: Any, v: Any, axes: tuple[int, ...], keep: bool) -> Any:
        return _sum(xp, xp.abs(v), axes, keep)


class ReduceL2(_Reduce):
    op, composite = "ReduceL2", True
    version = 2

    def reduce(self, xp: Any, v: Any, axes: tuple[int, ...], keep: bool) -> Any:
        if v.dtype.kind == "f":
            return xp.sqrt(_sum(xp, v * v, axes, keep))
        # Integers: squares summed in float64 (no overflow), the root truncated and, past the type's range,
        # saturated, as onnxruntime does.
        w = v.astype(xp.float64)
        root = xp.floor(xp.sqrt(_sum(xp, w * w, axes, keep)))
        top = np.iinfo(v.dtype).max
        fits = root < float(top)
        safe = xp.where(fits, root, xp.zeros_like(root)).astype(v.dtype)
        return xp.where(fits, safe, xp.asarray(top, dtype=v.dtype))


class ReduceSumSquare(_Reduce):
    op, composite = "ReduceSumSquare", True
    version = 2

    def reduce(self, xp: Any, v: Any, axes: tuple[int, ...], keep: bool) -> Any:
        return _sum(xp, v * v, axes, keep)


class ReduceLogSum(_Reduce):
    op, composite, dtypes = "ReduceLogSum", True, FLOATS
    version = 2

    def reduce(self, xp: Any, v: Any, axes: tuple[int, ...], keep: bool) -> Any:
        return xp.log(_sum(xp, v, axes, keep))


class ReduceLogSumExp(_Reduce):
    """log(sum(exp(x))) computed as m + log(sum(exp(x - m))) with m the (finite) maximum, so it neither
    overflows nor underflows; infinite maxima keep the plain formula (it gives the right inf or NaN)."""

    op, composite, dtypes = "ReduceLogSumExp", True, FLOATS
    version = 2

    def reduce(self, xp: Any, v: Any, axes: tuple[int, ...], keep: bool) -> Any:
        if v.size == 0:
            return xp.full(_reduced_shape(v.shape, axes, keep), -np.inf, dtype=v.dtype)
        m = xp.max(v, axis=axes, keepdims=True) if axes else v
        m = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
        y = xp.log(_sum(xp, xp.exp(v - m), axes, True)) + m
        return y if keep else y.reshape(_reduced_shape(v.shape, axes, False))


class _ArgExtreme(LayerDef):
    """ArgMax / ArgMin along one axis; int64 indices."""

    dtypes = INTEGERS + FLOATS
    largest: ClassVar[bool]

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        x = inputs[0]
        axis = axis_in_range(int(attrs["axis"]), x.rank)
        if x.shape[axis] == 0:
            raise OpError(f"{self.op} along axis {axis} of the input {list(x.shape)}, which has size 0, has no "
                          "answer")
        return [TensorType(_reduced_shape(x.shape, (axis,), bool(attrs["keepdims"])), "int64")]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x = inputs[0]
        axis, keep = int(attrs["axis"]), bool(attrs["keepdims"])
        v = x.astype(float_compute_type(xp, x), copy=False)  # exact: only comparisons
        pick = xp.argmax if self.largest else xp.argmin
        if attrs["select_last_index"]:
            index = (x.shape[axis] - 1) - pick(xp.flip(v, axis), axis=axis)
        else:
            index = pick(v, axis=axis)
        index = xp.asarray(index).astype(xp.int64, copy=False)
        return [xp.expand_dims(index, axis) if keep else index]


class ArgMax(_ArgExtreme):
    op, largest = "ArgMax", True
    version = 2


class ArgMin(_ArgExtreme):
    op, largest = "ArgMin", False
    version = 2


LAYERS = (ArgMax(), ArgMin(), ReduceL1(), ReduceL2(), ReduceLogSum(), ReduceLogSumExp(), ReduceMax(), ReduceMean(),
          ReduceMin(), ReduceProd(), ReduceSum(), ReduceSumSquare())

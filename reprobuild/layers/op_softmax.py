"""Softmax, LogSoftmax and Hardmax along one axis (opset 13+), or over the input flattened to 2-D at ``axis``
(opset < 13, canonical attribute ``coerce_2d=1``).

Half-precision inputs are computed in their own type, step by step, as ONNX defines Softmax and LogSoftmax (a
function of ReduceMax, Sub, Exp, ReduceSum and Div, each in the input's type ``T``) and as the reference evaluator
computes them: a float32 computation rounded once differs from that by a unit or two in the last place, and
attention graphs written out in primitive ops carry such differences to their outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reprobuild.core.dtypes import FLOATS
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType
from reprobuild.layers.families import float_compute_type


class _Normalize(LayerDef):
    dtypes = FLOATS

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        rank, axis = max(inputs[0].rank, 1), int(attrs["axis"])
        if not 0 <= axis < rank:
            raise OpError(f"axis {axis} is not an axis of the rank-{rank} input (a layer's axis is non-negative)")
        if attrs["coerce_2d"] not in (0, 1):
            raise OpError(f"coerce_2d is {attrs['coerce_2d']!r}; it is 0 or 1")
        return [TensorType(inputs[0].shape, inputs[0].dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x = inputs[0]
        shape, axis = x.shape, int(attrs["axis"])
        if attrs["coerce_2d"]:
            outer = 1
            for d in shape[:axis]:
                outer *= d
            rows = x.reshape(outer, -1)
            return [self.along(xp, rows.astype(self.work_type(xp, x), copy=False), 1)
                    .astype(x.dtype, copy=False).reshape(shape)]
        if x.ndim == 0:
            x = x.reshape(1)
        y = self.along(xp, x.astype(self.work_type(xp, x), copy=False), axis)
        return [y.astype(inputs[0].dtype, copy=False).reshape(shape)]

    def work_type(self, xp: Any, x: Any) -> Any:
        return x.dtype

    def along(self, xp: Any, x: Any, axis: int) -> Any:
        raise NotImplementedError


class Softmax(_Normalize):
    op = "Softmax"
    version = 2

    def along(self, xp: Any, x: Any, axis: int) -> Any:
        e = xp.exp(x - x.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)


class LogSoftmax(_Normalize):
    op = "LogSoftmax"
    version = 2

    def along(self, xp: Any, x: Any, axis: int) -> Any:
        shifted = x - x.max(axis=axis, keepdims=True)
        return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


class Hardmax(_Normalize):
    """1 at the first maximum along the axis, 0 elsewhere."""

    op = "Hardmax"
    version = 2

    def work_type(self, xp: Any, x: Any) -> Any:
        return float_compute_type(xp, x)

    def along(self, xp: Any, x: Any, axis: int) -> Any:
        first = xp.expand_dims(xp.argmax(x, axis=axis), axis)
        index = xp.arange(x.shape[axis]).reshape([-1 if d == axis else 1 for d in range(x.ndim)])
        return (index == first).astype(x.dtype)


LAYERS = (Hardmax(), LogSoftmax(), Softmax())

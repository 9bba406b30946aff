"""Normalizations that divide by a norm, with no mean subtracted: RMSNormalization, LpNormalization and LRN.

ONNX subtleties:

- RMSNormalization's scale has its own type constraint (V) in the schema, but ONNX's function body multiplies
  the normalized X (of X's type) by it, so the two must match; the output has that type.
- LpNormalization supports only p = 1 and p = 2 (so ONNX says); a norm of zero gives zero (ONNX 22 says so;
  earlier versions left 0/0 undefined). The norm is computed scaled by the largest magnitude, so that squares
  neither overflow nor underflow.
- LRN sums squares over a window of ``size`` channels, floor((size - 1) / 2) before and ceil((size - 1) / 2)
  after each channel, clipped at the edges.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reprobuild.core.dtypes import FLOATS
from reprobuild.layers._norm_stats import check_broadcasts, check_stash_type, work_dtype
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType
from reprobuild.layers.families import Unary


class RMSNormalization(LayerDef):
    op = "RMSNormalization"
    version = 2
    num_inputs = (2, 2)
    dtypes = FLOATS
    same_type = (1,)

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        check_stash_type(attrs["stash_type"])
        x, scale = inputs
        if not 0 <= int(attrs["axis"]) < x.rank:
            raise OpError(f"axis {attrs['axis']} is not a dimension of the input {list(x.shape)}")
        check_broadcasts(scale, x, "scale")
        return [x]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x, scale = inputs
        work = work_dtype(xp, x, int(attrs["stash_type"]))
        xw = x.astype(work)
        mean_square = (xw * xw).mean(axis=tuple(range(int(attrs["axis"]), x.ndim)), keepdims=True)
        y = xw / xp.sqrt(mean_square + float(attrs["epsilon"])) * scale.astype(work, copy=False)
        return [y.astype(x.dtype, copy=False)]


class LpNormalization(Unary):
    op, dtypes = "LpNormalization", FLOATS
    version = 2
    upcast = False

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        if attrs["p"] not in (1, 2) or not 0 <= int(attrs["axis"]) < inputs[0].rank:
            raise OpError(f"p = {attrs['p']} and axis = {attrs['axis']} on input {list(inputs[0].shape)}: p must "
                          "be 1 or 2, and axis a non-negative dimension of the input")
        return super().infer(attrs, inputs)

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        xw = x.astype(work_dtype(xp, x))
        axis = int(attrs["axis"])
        largest = xp.abs(xw).max(axis=axis, keepdims=True)
        safe = xp.where(largest == 0, xp.ones_like(largest), largest)
        scaled = xw / safe
        if attrs["p"] == 1:
            norm = xp.abs(scaled).sum(axis=axis, keepdims=True)
        else:
            norm = xp.sqrt((scaled * scaled).sum(axis=axis, keepdims=True))
        return xp.where(largest == 0, xp.zeros_like(xw), scaled / norm)


class LRN(Unary):
    op, dtypes = "LRN", FLOATS
    version = 2
    upcast = False

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        if inputs[0].rank < 2 or int(attrs["size"]) < 1:
            raise OpError(f"needs an input of rank >= 2 (N, C, ...) and size >= 1; got shape "
                          f"{list(inputs[0].shape)} and size {attrs['size']}")
        return super().infer(attrs, inputs)

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        xw = x.astype(work_dtype(xp, x))
        size, channels = int(attrs["size"]), x.shape[1]
        before = (size - 1) // 2
        widths = [(0, 0), (before, size - 1 - before)] + [(0, 0)] * (x.ndim - 2)
        squares = xp.pad(xw * xw, widths)
        total = squares[:, 0:channels]
        for k in range(1, size):
            total = total + squares[:, k:k + channels]
        return xw / (attrs["bias"] + (attrs["alpha"] / size) * total) ** attrs["beta"]

"""Pad and CenterCropPad, computed as one gather per padded axis.

Canonical Pad attributes: ``mode`` (constant/reflect/edge/wrap), ``pads`` (begin of every axis, then end of
every axis: all ``2 * rank`` of them, whatever ``axes`` said) and ``value`` (the constant, a Python int for
integer and bool data, a float otherwise). A ``constant_value`` known at build time becomes ``value``; one
computed at run time stays the layer's second input, read on the device. Pad 2's ``value`` attribute gives the
same form as Pad 11's constant input.

ONNX subtleties:

- negative pads remove elements; reprobuild allows them in constant mode only (onnx's reference, ``np.pad``,
  rejects them, and in the other modes it is unclear whether they apply before or after the padding);
- reflect and wrap may pad by more than the axis' size: the pattern repeats, as ``np.pad`` does (reflect is
  periodic with period 2 * (n - 1); an axis of size 1 repeats its element); edge, reflect and wrap refuse to pad
  an empty axis;
- wrap only exists from Pad 19.

CenterCropPad becomes a constant-mode Pad with value 0: negative pads crop, positive pads pad, the odd element
of each going to the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from reprobuild.core.dtypes import ALL
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType

MODES = ("constant", "reflect", "edge", "wrap")


def source_index(n: int, begin: int, end: int, mode: str) -> np.ndarray:
    """For each position along the padded axis, the input position it copies (constant mode: clipped; the
    caller masks the padding)."""
    s = np.arange(-begin, n + end, dtype=np.int64)
    if mode == "constant" or mode == "edge":
        return np.clip(s, 0, max(n - 1, 0))
    if mode == "wrap":
        return np.mod(s, n)
    if n == 1:  # reflect
        return np.zeros_like(s)
    period = 2 * (n - 1)
    s = np.mod(s, period)
    return np.where(s >= n, period - s, s)


class Pad(LayerDef):
    op = "Pad"
    version = 2
    num_inputs = (1, 4)
    dtypes = ALL

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        x, mode, pads = inputs[0], str(attrs["mode"]), tuple(attrs["pads"])
        if mode not in MODES:
            raise OpError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        if len(pads) != 2 * x.rank:
            raise OpError(f"pads has {len(pads)} values; the input of rank {x.rank} needs {2 * x.rank}")
        if len(inputs) > 1 and (inputs[1].dtype != x.dtype or inputs[1].size != 1):
            raise OpError(f"constant_value must be one {x.dtype} value; got {inputs[1].dtype} of shape "
                          f"{list(inputs[1].shape)}")
        shape = []
        for d, n in enumerate(x.shape):
            b, e = pads[d], pads[x.rank + d]
            if mode != "constant" and min(b, e) < 0:
                raise OpError(f"pads {list(pads)} are negative on axis {d}; reprobuild removes elements with "
                              f"negative pads in constant mode only, not in {mode} mode")
            if mode != "constant" and n == 0 and b + e > 0:
                raise OpError(f"axis {d} is empty: {mode} mode has nothing to pad it with")
            if n + b + e < 0:
                raise OpError(f"pads {list(pads)} remove more than the {n} elements of axis {d}")
            shape.append(n + b + e)
        return [TensorType(tuple(shape), x.dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x, mode, pads = inputs[0], str(attrs["mode"]), tuple(attrs["pads"])
        rank = x.ndim
        if mode == "constant":
            value = inputs[1].reshape(()) if len(inputs) > 1 else xp.asarray(attrs["value"]).astype(x.dtype)
        y = x
        for d in range(rank):
            b, e, n = pads[d], pads[rank + d], x.shape[d]
            if b == 0 and e == 0:
                continue
            index = source_index(n, b, e, mode)
            if n == 0:  # constant mode: only padding
                shape = list(y.shape)
                shape[d] = n + b + e
                y = xp.broadcast_to(value, tuple(shape))
                continue
            y = xp.take(y, xp.asarray(index), axis=d)
            if mode == "constant":
                inside = np.arange(-b, n + e).reshape([-1 if k == d else 1 for k in range(rank)])
                y = xp.where(xp.asarray((inside >= 0) & (inside < n)), y, value)
        return [xp.ascontiguousarray(y) if y is not x else y.copy()]

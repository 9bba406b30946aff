"""Transforms that select elements by position: Trilu (a mask), OneHot (a comparison with the class index) and
ReverseSequence (a gather whose indices come from the run-time ``sequence_lens``).

Masks and index arrays that depend only on shapes and attributes are made on the host; whatever depends on
tensor values (OneHot's indices and values, ReverseSequence's lengths) stays on the device.

ONNX subtleties:

- Trilu's ``k`` is an optional input; it decides the mask, so it must be known when the engine is built.
- OneHot: ``depth`` must be known at build time (it is the output's size); float ``indices`` and ``depth`` are
  cast to int64 (truncated) before use, as the spec says and onnxruntime 1.32 does (onnx's reference and older
  onnxruntime compare the float values, so a non-integral index matches no class there); indices in
  [-depth, -1] count from the end; other indices (NaN and inf too) give a row of off_value. The output is
  ``values[1]`` where the index matches and ``values[0]`` elsewhere, exactly (onnx's reference computes
  ``hot * (on - off) + off``, which can round).
- ReverseSequence reverses the first ``sequence_lens[b]`` steps of each batch entry. A length outside
  [0, time steps] is invalid ONNX; it cannot be checked without reading the lengths on the host, so it is
  clamped to that range.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from reprobuild.core.dtypes import ALL, FLOATS, INTEGERS, NUMERIC, SIGNED
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType


class Trilu(LayerDef):
    op = "Trilu"
    version = 2
    num_inputs = (1, 2)
    dtypes = ALL

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        if inputs[0].rank < 2:
            raise OpError(f"needs an input of rank >= 2 (a matrix or a batch of them); got {list(inputs[0].shape)}")
        return [inputs[0]]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x, k = inputs[0], int(attrs["k"])
        rows, cols = x.shape[-2:]
        offset = np.arange(cols)[None, :] - np.arange(rows)[:, None]  # column - row: the diagonal's index
        keep = offset >= k if attrs["upper"] else offset <= k
        return [xp.where(xp.asarray(keep), x, xp.zeros((), dtype=x.dtype))]


class OneHot(LayerDef):
    op = "OneHot"
    version = 2
    num_inputs = (3, 3)
    dtypes = NUMERIC

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        indices, values = inputs
        if values.size != 2 or values.rank != 1:
            raise OpError(f"values must hold [off_value, on_value]: shape [2]; got {list(values.shape)}")
        axis, depth = int(attrs["axis"]), int(attrs["depth"])
        if not 0 <= axis <= indices.rank or depth < 0:
            raise OpError(f"axis {axis} is not in [0, {indices.rank}] (a layer's axis is non-negative) or depth "
                          f"{depth} is negative")
        shape = (*indices.shape[:axis], depth, *indices.shape[axis:])
        return [TensorType(shape, values.dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        indices, values = inputs
        axis, depth = int(attrs["axis"]), int(attrs["depth"])
        index = xp.expand_dims(indices, axis)
        classes = xp.arange(depth, dtype=xp.int64).reshape(tuple(-1 if d == axis else 1 for d in range(index.ndim)))
        kind = str(indices.dtype)
        if kind in FLOATS:  # cast to int64 by truncation; NaN and inf match nothing
            index, classes = xp.trunc(index.astype(xp.float64)), classes.astype(xp.float64)
        elif kind in SIGNED:
            index = index.astype(xp.int64)
        else:  # unsigned: never negative, compared without a wrap to int64
            assert kind in INTEGERS
            index, classes = index.astype(xp.uint64), classes.astype(xp.uint64)
        hot = index == classes
        if kind not in INTEGERS or kind in SIGNED:
            hot |= index == classes - depth
        return [xp.where(hot, values[1, ...], values[0, ...])]


class ReverseSequence(LayerDef):
    op = "ReverseSequence"
    version = 2
    num_inputs = (2, 2)
    dtypes = ALL

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        x, lens = inputs
        if x.rank < 2:
            raise OpError(f"needs an input of rank >= 2 (time and batch axes); got {list(x.shape)}")
        if (attrs["batch_axis"], attrs["time_axis"]) not in ((1, 0), (0, 1)):
            raise OpError(f"batch_axis and time_axis are ({attrs['batch_axis']}, {attrs['time_axis']}); ONNX "
                          "allows (1, 0) or (0, 1)")
        batch = x.shape[int(attrs["batch_axis"])]
        if lens.dtype != "int64" or lens.shape != (batch,):
            raise OpError(f"sequence_lens must be int64 of shape [{batch}] (one length per batch entry); got "
                          f"{lens.dtype} of shape {list(lens.shape)}")
        return [x]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x, lens = inputs
        t_axis = int(attrs["time_axis"])
        steps = x.shape[t_axis]
        lengths = xp.clip(lens, 0, steps)
        t = xp.arange(steps, dtype=xp.int64)
        t, lengths = (t[:, None], lengths[None, :]) if t_axis == 0 else (t[None, :], lengths[:, None])
        source = xp.where(t < lengths, lengths - 1 - t, t)  # (time, batch) or (batch, time)
        source = source.reshape(source.shape + (1,) * (x.ndim - 2))
        source = xp.ascontiguousarray(xp.broadcast_to(source, x.shape))
        return [xp.take_along_axis(x, source, axis=t_axis)]

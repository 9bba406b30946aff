"""Scatters: ScatterElements (and its deprecated alias Scatter), ScatterND and TensorScatter.

ONNX leaves the result undefined when indices repeat (reduction none) and the order of the updates unspecified
(add, mul, max, min). reprobuild fixes both, on every backend and without atomics: **updates apply in index
order** (the C order of the indices), so the last one of a repeated index wins, and a reduction folds
``data[t] f u1 f u2 ...`` in that order, exactly as onnx's reference loop does:

- reduction none: the indices are sorted by (target, position); every update to a target then writes the value of
  the last one, so the simultaneous writes all carry the same bytes;
- ScatterElements reductions: one round per position along ``axis`` (a static count); the targets within a round
  are distinct (they differ in the other axes), so each round is one plain gather-modify-scatter;
- ScatterND reductions: one round per update row (a static count, usually small).

float16 and bfloat16 reductions are computed in float32 and rounded once. Negative indices are wrapped on the
device; indices out of range are undefined behaviour in ONNX (NumPy raises IndexError for most, CuPy wraps).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from reprobuild.core.dtypes import ALL, NUMERIC
from reprobuild.layers._index_gather import check_index_values, check_indices, wrap_negative
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType
from reprobuild.layers.families import float_compute_type


def _combine(xp: Any, reduction: str, old: Any, new: Any) -> Any:
    if reduction == "add":
        return old + new
    if reduction == "mul":
        return old * new
    return xp.maximum(old, new) if reduction == "max" else xp.minimum(old, new)


def check_reduction_dtype(reduction: str, dtype: str) -> None:
    if reduction != "none" and dtype not in NUMERIC:
        raise OpError(f"reduction {reduction!r} needs a numeric (integer or float) data type; got {dtype}")


def assign_last(xp: Any, out: Any, coords: Sequence[Any], values: Any) -> None:
    """``out[coords[0][m], ..., coords[k-1][m]] = values[m]`` for every row m, the last row winning where
    targets repeat: rows are sorted by (target, row), and every row writes its target's winning value."""
    rows = values.shape[0]
    if rows == 0:
        return
    lin = xp.zeros(rows, dtype=xp.int64)
    for c, dim in zip(coords, out.shape):
        lin = lin * dim + c.astype(xp.int64)
    order = xp.argsort(lin * rows + xp.arange(rows, dtype=xp.int64))  # unique keys: any sort is stable
    ranked = lin[order]
    last = xp.searchsorted(ranked, ranked, side="right") - 1
    out[tuple(c[order] for c in coords)] = values[order[last]]


class ScatterElements(LayerDef):
    """``output[..., indices[..., i, ...], ...] = updates[..., i, ...]`` along ``axis``."""

    op = "ScatterElements"
    version = 2
    num_inputs = (3, 3)
    dtypes = ALL
    same_type = (2,)

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        data, indices, updates = inputs
        check_indices(indices)
        check_reduction_dtype(str(attrs["reduction"]), data.dtype)
        axis = int(attrs["axis"])
        if updates.shape != indices.shape:
            raise OpError(f"updates {list(updates.shape)} must have the shape of the indices {list(indices.shape)}")
        if indices.rank != data.rank or not 0 <= axis < data.rank or any(
                i > d for a, (i, d) in enumerate(zip(indices.shape, data.shape)) if a != axis):
            raise OpError(f"indices of shape {list(indices.shape)} must have the rank of the data "
                          f"{list(data.shape)}, and no larger dimension outside axis {axis}")
        return [data]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        data, indices, updates = inputs
        axis, reduction = int(attrs["axis"]), str(attrs["reduction"])
        index = wrap_negative(xp, indices, data.shape[axis])
        shape = indices.shape
        if reduction == "none":
            out = data.copy()
            grid = [xp.broadcast_to(xp.arange(n).reshape([-1 if a == d else 1 for a in range(len(shape))]), shape)
                    for d, n in enumerate(shape)]
            grid[axis] = index
            assign_last(xp, out, [g.reshape(-1) for g in grid], updates.reshape(-1))
            return [out]
        work = float_compute_type(xp, data)
        out, values = data.astype(work), updates.astype(work, copy=False)
        rest = [n for a, n in enumerate(shape) if a != axis]
        grid = [xp.arange(n).reshape([-1 if a == d else 1 for a in range(len(rest))]) for d, n in enumerate(rest)]
        for j in range(shape[axis]):  # one round per position along the axis: distinct targets within a round
            at = (slice(None),) * axis + (j,)
            key = (*grid[:axis], index[at], *grid[axis:])
            out[key] = _combine(xp, reduction, out[key], values[at])
        return [out.astype(data.dtype, copy=False)]

    def check_constants(self, attrs: Attrs, inputs: Sequence[TensorType], constants: Mapping[int, Any]) -> None:
        if 1 in constants:
            check_index_values(constants[1], [inputs[0].shape[int(attrs["axis"])]])


class ScatterND(LayerDef):
    """Each row of ``indices`` (its last axis, of length k) addresses a slice of ``data`` (its first k axes),
    which the matching slice of ``updates`` replaces or is folded into."""

    op = "ScatterND"
    version = 2
    num_inputs = (3, 3)
    dtypes = ALL
    same_type = (2,)

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        data, indices, updates = inputs
        check_indices(indices, ("int64",))
        check_reduction_dtype(str(attrs["reduction"]), data.dtype)
        k = indices.shape[-1] if indices.rank else 0
        if not 1 <= k <= data.rank:
            raise OpError(f"indices {list(indices.shape)} must have rank >= 1 and a last dimension between 1 and "
                          f"the data's rank {data.rank}")
        want = (*indices.shape[:-1], *data.shape[k:])
        if updates.shape != want:
            raise OpError(f"updates have shape {list(updates.shape)}; indices {list(indices.shape)} and data "
                          f"{list(data.shape)} need {list(want)}")
        return [data]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        data, indices, updates = inputs
        reduction, k = str(attrs["reduction"]), indices.shape[-1]
        rows = int(np.prod(indices.shape[:-1], dtype=np.int64))
        dims = xp.asarray(np.array(data.shape[:k], dtype=np.int64))
        index = wrap_negative(xp, indices.reshape(rows, k), dims)
        coords = [index[:, j] for j in range(k)]
        values = updates.reshape((rows, *data.shape[k:]))
        if reduction == "none":
            out = data.copy()
            assign_last(xp, out, coords, values)
            return [out]
        work = float_compute_type(xp, data)
        out, values = data.astype(work), values.astype(work, copy=False)
        for m in range(rows):  # one round per update row, in index order
            key = tuple(c[m] for c in coords)
            out[key] = _combine(xp, reduction, out[key], values[m])
        return [out.astype(data.dtype, copy=False)]

    def check_constants(self, attrs: Attrs, inputs: Sequence[TensorType], constants: Mapping[int, Any]) -> None:
        if 1 in constants:
            check_index_values(constants[1], inputs[0].shape[:inputs[1].shape[-1]])


class TensorScatter(LayerDef):
    """A KV-cache write: ``update`` (sequence length s along ``axis``) is written into ``past_cache`` at
    positions ``write_indices[b] + 0..s-1`` of each batch entry b (0 when omitted), modulo the cache length in
    circular mode. The positions of one batch entry are distinct, so the write is one plain scatter."""

    op = "TensorScatter"
    version = 2
    num_inputs = (2, 3)
    dtypes = ALL
    same_type = (1,)

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        cache, update = inputs[0], inputs[1]
        axis = int(attrs["axis"])
        if update.rank != cache.rank or not 1 <= axis < cache.rank or update.shape[axis] > cache.shape[axis] or any(
                u != c for a, (u, c) in enumerate(zip(update.shape, cache.shape)) if a != axis):
            raise OpError(f"update {list(update.shape)} must match past_cache {list(cache.shape)} except along axis "
                          f"{axis}, where it may not be longer")
        if len(inputs) > 2:
            check_indices(inputs[2], ("int64",), which=2)
            if inputs[2].shape != cache.shape[:1]:
                raise OpError(f"write_indices have shape {list(inputs[2].shape)}; they need one per batch entry "
                              f"({cache.shape[0]})")
        return [cache]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        cache, update = inputs[0], inputs[1]
        axis = int(attrs["axis"])
        batch, length, steps = cache.shape[0], cache.shape[axis], update.shape[axis]
        out = xp.moveaxis(cache, axis, 1).copy()
        start = inputs[2].reshape(batch, 1) if len(inputs) > 2 else xp.zeros((batch, 1), dtype=xp.int64)
        position = start + xp.arange(steps, dtype=xp.int64).reshape(1, steps)
        if attrs["mode"] == "circular":
            position = position % length
        out[xp.arange(batch).reshape(batch, 1), position] = xp.moveaxis(update, axis, 1)
        return [xp.ascontiguousarray(xp.moveaxis(out, 1, axis))]

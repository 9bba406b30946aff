"""Gathers: Gather, GatherElements, GatherND, and Compress and NonZero, whose selections are fixed at build time.

Index tensors arrive at run time, so nothing about their values is checked on the host: negative indices are
wrapped on the device (``i + n`` where ``i < 0``). Indices outside [-n, n) are undefined behaviour in ONNX; NumPy
raises an IndexError for most of them, CuPy wraps them.

Compress with a condition known at build time is a gather of the selected positions (canonical attributes
``axis``, ``flatten`` and ``selected``). NonZero's output shape is its input's count of nonzeros: it is computed
when the network is parsed if its input is a constant, and refused otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from reprobuild.core.dtypes import ALL
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType

INDEX_TYPES = ("int32", "int64")


def wrap_negative(xp: Any, index: Any, n: Any) -> Any:
    """ONNX's negative indices (counting from the end) made non-negative, on the device."""
    return xp.where(index < 0, index + n, index)


def check_index_values(indices: Any, bounds: Sequence[int], what: str = "indices") -> None:
    """Every index in range: ``indices[..., j]`` within [-bounds[j], bounds[j]) (one bound: every index), the
    range ONNX defines (negative ones count from the end); an OpError naming the first one outside."""
    values = np.asarray(indices).reshape(-1, len(bounds)) if len(bounds) > 1 else np.asarray(indices).reshape(-1, 1)
    for j, n in enumerate(bounds):
        column = values[:, j]
        bad = np.flatnonzero((column < -n) | (column >= n))
        if bad.size:
            raise OpError(f"{what} hold {int(column[bad[0]])} (at flat position {int(bad[0]) * len(bounds) + j}), "
                          f"outside [-{n}, {n}) for a dimension of {n}; ONNX leaves such an index undefined")


def check_indices(t: TensorType, allowed: Sequence[str] = INDEX_TYPES, which: int = 1) -> None:
    if t.dtype not in allowed:
        raise OpError(f"input {which} (indices) has dtype {t.dtype}; it must be {' or '.join(allowed)}")


class _AxisGather(LayerDef):
    num_inputs = (2, 2)
    dtypes = ALL


class Gather(_AxisGather):
    """``output = take(data, indices, axis)``: data's axis replaced by the indices' shape."""

    op = "Gather"
    version = 2

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        data, indices = inputs
        check_indices(indices)
        axis = int(attrs["axis"])
        if not 0 <= axis < data.rank:
            raise OpError(f"axis {axis} is out of range for data of shape {list(data.shape)}")
        return [TensorType((*data.shape[:axis], *indices.shape, *data.shape[axis + 1:]), data.dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        data, indices = inputs
        axis = int(attrs["axis"])
        return [xp.take(data, wrap_negative(xp, indices, data.shape[axis]), axis=axis)]

    def check_constants(self, attrs: Attrs, inputs: Sequence[TensorType], constants: Mapping[int, Any]) -> None:
        if 1 in constants:
            check_index_values(constants[1], [inputs[0].shape[int(attrs["axis"])]])


class GatherElements(_AxisGather):
    """``output[..., i, ...] = data[..., indices[..., i, ...], ...]`` along ``axis``; the output has the indices'
    shape, which may be smaller than the data's in the other axes."""

    op = "GatherElements"
    version = 2

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        data, indices = inputs
        check_indices(indices)
        axis = int(attrs["axis"])
        if indices.rank != data.rank or not 0 <= axis < data.rank or any(
                i > d for a, (i, d) in enumerate(zip(indices.shape, data.shape)) if a != axis):
            raise OpError(f"indices of shape {list(indices.shape)} must have the rank of the data "
                          f"{list(data.shape)}, and no larger dimension outside axis {axis}")
        return [TensorType(indices.shape, data.dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        data, indices = inputs
        axis = int(attrs["axis"])
        window = tuple(slice(None) if a == axis else slice(0, n) for a, n in enumerate(indices.shape))
        index = wrap_negative(xp, indices, data.shape[axis])
        return [xp.take_along_axis(data[window], index, axis=axis)]

    def check_constants(self, attrs: Attrs, inputs: Sequence[TensorType], constants: Mapping[int, Any]) -> None:
        if 1 in constants:
            check_index_values(constants[1], [inputs[0].shape[int(attrs["axis"])]])


class GatherND(LayerDef):
    """Each row of ``indices`` (its last axis, of length k) addresses a slice of ``data`` after the first
    ``batch_dims`` axes, which data and indices share."""

    op = "GatherND"
    version = 2
    num_inputs = (2, 2)
    dtypes = ALL

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        data, indices = inputs
        check_indices(indices, ("int64",))
        b = int(attrs["batch_dims"])
        if not 0 <= b < min(data.rank, indices.rank):
            raise OpError(f"batch_dims={b} must be at least 0 and less than the ranks of data {list(data.shape)} "
                          f"and indices {list(indices.shape)}")
        if data.shape[:b] != indices.shape[:b]:
            raise OpError(f"the first batch_dims={b} dimensions of data {list(data.shape)} and indices "
                          f"{list(indices.shape)} must be equal")
        k = indices.shape[-1]
        if not 1 <= k <= data.rank - b:
            raise OpError(f"the last dimension of indices {list(indices.shape)} is {k}; it must be between 1 and "
                          f"the data's rank minus batch_dims ({data.rank - b})")
        return [TensorType((*indices.shape[:-1], *data.shape[b + k:]), data.dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        data, indices = inputs
        b, k = int(attrs["batch_dims"]), indices.shape[-1]
        batch = int(np.prod(data.shape[:b], dtype=np.int64))
        rows = int(np.prod(indices.shape[b:-1], dtype=np.int64))
        flat = data.reshape((batch, *data.shape[b:]))
        dims = xp.asarray(np.array(data.shape[b:b + k], dtype=np.int64))
        index = wrap_negative(xp, indices.reshape(batch, rows, k), dims)
        key = (xp.arange(batch).reshape(batch, 1), *(index[:, :, j] for j in range(k)))
        return [flat[key].reshape((*indices.shape[:-1], *data.shape[b + k:]))]

    def check_constants(self, attrs: Attrs, inputs: Sequence[TensorType], constants: Mapping[int, Any]) -> None:
        if 1 in constants:
            b, k = int(attrs["batch_dims"]), inputs[1].shape[-1]
            check_index_values(constants[1], inputs[0].shape[b:b + k])


class Compress(LayerDef):
    """The condition must be known at build time (it decides the output shape); the layer gathers the selected
    positions along ``axis``, or of the flattened input."""

    op = "Compress"
    version = 2
    num_inputs = (2, 2)
    dtypes = ALL

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        x, axis, selected = inputs[0], int(attrs["axis"]), tuple(attrs["selected"])
        shape = (x.size,) if attrs["flatten"] else x.shape
        if not 0 <= axis < len(shape) or any(not 0 <= i < shape[axis] for i in selected):
            raise OpError(f"the selected positions do not fit axis {axis} of {list(shape)}")
        return [TensorType((*shape[:axis], len(selected), *shape[axis + 1:]), x.dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x = inputs[0].reshape(-1) if attrs["flatten"] else inputs[0]
        index = xp.asarray(np.array(attrs["selected"], dtype=np.int64))
        return [xp.take(x, index, axis=int(attrs["axis"]))]

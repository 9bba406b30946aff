"""Index tactics: Slice, Split, Expand, Tile and constant-mode Pad as one strided-gather kernel, Gather with
indices that arrive at run time (an embedding lookup), and GatherND with constant indices (rows copied from
offsets computed when the engine is built). CUDA tactics compile ``index.cu``.

Every op here only moves elements, so each is described on the host as one map from output coordinates to a
source offset (:class:`Axis`, one per output dimension: "coordinate q reads ``(q mod mod) * coef``, and only
where ``lo <= q < hi``, elsewhere the fill value"), plus a base offset. A Slice's step and start fold into the
coefficient and the base, an Expand broadcasts with a coefficient of 0, a Tile repeats with the modulus, a Pad
shifts by its begin pad and fills outside the input's range, and a Split is one Slice per output. The map is
simplified before it is launched: output dimensions of size 1 are dropped, and neighbours that walk the source
as one dimension are merged, so a Slice of the last axis of a (B, S, D) tensor is a rank-2 problem and an Expand
of a (B, 1, 1, S) mask to (B, H, S, S) a rank-3 one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from reprobuild.core.dtypes import itemsize as dtype_itemsize
from reprobuild.core.dtypes import np_dtype
from reprobuild.kernels.backend import Backend
from reprobuild.kernels.cuda_launch import i32, i64, linear, operand_refs, plan
from reprobuild.kernels.launch import In, KernelLaunch, Out
from reprobuild.kernels.tactic import CUDA_STORAGE_DTYPES, Kernel, LayerSpec, Tactic

#: The most dimensions the strided gather indexes after simplification; MAX_RANK in index.cu.
MAX_RANK = 8
#: The kernel of each element width: elements move as unsigned words of their size.
WORDS = MappingProxyType({1: "u8", 2: "u16", 4: "u32", 8: "u64"})


@dataclass(frozen=True)
class Axis:
    """One output dimension of a strided gather: coordinate ``q`` (in ``[0, size)``) reads source offset
    ``(q % mod) * coef`` (elements, summed over the dimensions with the base), or the fill value unless
    ``lo <= q < hi``."""

    size: int
    mod: int
    coef: int
    lo: int
    hi: int

    @property
    def plain(self) -> bool:
        """Whether every coordinate reads the source without wrapping: such neighbours can merge."""
        return self.mod >= self.size and self.lo <= 0 and self.hi >= self.size


def axis(size: int, coef: int, mod: int | None = None, lo: int = 0, hi: int | None = None) -> Axis:
    """An :class:`Axis` in normal form: a modulus of 1 (a repeated single element) is a coefficient of 0."""
    mod = size if mod is None else mod
    if mod == 1:
        mod, coef = size, 0
    return Axis(size, mod, coef, lo, size if hi is None else hi)


def simplify(axes: Sequence[Axis]) -> list[Axis]:
    """The same map with fewer dimensions: a dimension of size 1 whose coordinate reads the source is dropped (it
    adds nothing to the offset), and a plain dimension merges into the plain one before it when it continues it
    (the outer one's coefficient is the inner one's extent times its coefficient)."""
    merged: list[Axis] = []
    for a in axes:
        if a.size == 1 and a.lo <= 0 < a.hi:
            continue
        last = merged[-1] if merged else None
        if last is not None and last.plain and a.plain and last.coef == a.size * a.coef:
            size = last.size * a.size
            merged[-1] = Axis(size, size, a.coef, 0, size)
        else:
            merged.append(a)
    return merged


def contiguous_strides(shape: Sequence[int]) -> list[int]:
    """The element strides of a contiguous array of ``shape``."""
    return [int(np.prod(shape[d + 1:], dtype=np.int64)) for d in range(len(shape))]


def slice_map(shape: Sequence[int], starts: Sequence[int], steps: Sequence[int],
              out_shape: Sequence[int]) -> tuple[list[Axis], int]:
    """The map of a canonical Slice (``starts``/``steps`` per axis, any sign), and its base offset."""
    strides = contiguous_strides(shape)
    axes = [axis(n, step * st) for n, step, st in zip(out_shape, steps, strides)]
    return axes, sum(start * st for start, st in zip(starts, strides))


def expand_map(shape: Sequence[int], out_shape: Sequence[int]) -> list[Axis]:
    """The map of an Expand (numpy broadcasting of ``shape`` to ``out_shape``)."""
    padded = (1,) * (len(out_shape) - len(shape)) + tuple(shape)
    strides = contiguous_strides(padded)
    return [axis(n, 0 if m == 1 else st) for n, m, st in zip(out_shape, padded, strides)]


def tile_map(shape: Sequence[int], repeats: Sequence[int]) -> list[Axis]:
    """The map of a Tile: each axis repeats the input's ``repeats`` times."""
    strides = contiguous_strides(shape)
    return [axis(n * r, st, mod=n) for n, r, st in zip(shape, repeats, strides)]


def pad_map(shape: Sequence[int], pads: Sequence[int]) -> tuple[list[Axis], int]:
    """The map of a constant-mode Pad (``pads``: every axis' begin, then every axis' end; negative ones crop),
    and its base offset: coordinate q of an axis reads input position q - begin, where that lies in the input."""
    rank, strides = len(shape), contiguous_strides(shape)
    axes = [axis(n + pads[d] + pads[rank + d], strides[d], lo=pads[d], hi=pads[d] + n) for d, n in enumerate(shape)]
    return axes, -sum(pads[d] * strides[d] for d in range(rank))


def split_maps(shape: Sequence[int], axis_index: int, sizes: Sequence[int]) -> list[tuple[list[Axis], int]]:
    """The map of each output of a Split: a Slice of ``axis_index``."""
    maps, begin = [], 0
    for size in sizes:
        starts = [begin if d == axis_index else 0 for d in range(len(shape))]
        out_shape = [size if d == axis_index else n for d, n in enumerate(shape)]
        maps.append(slice_map(shape, starts, [1] * len(shape), out_shape))
        begin += size
    return maps


def layer_maps(layer: LayerSpec) -> list[tuple[list[Axis], int]]:
    """The (unsimplified) map and base of each output of a Slice, Split, Expand, Tile or Pad layer."""
    shape, out_shape = layer.inputs[0].shape, layer.outputs[0].shape
    if layer.op == "Slice":
        return [slice_map(shape, layer.attr("starts"), layer.attr("steps"), out_shape)]
    if layer.op == "Split":
        return split_maps(shape, int(layer.attr("axis")), layer.attr("split"))
    if layer.op == "Expand":
        return [(expand_map(shape, out_shape), 0)]
    if layer.op == "Tile":
        return [(tile_map(shape, layer.attr("repeats")), 0)]
    if layer.op == "Pad":
        return [pad_map(shape, layer.attr("pads"))]
    raise ValueError(f"the strided gather does not run {layer.op}")


def fill_bits(value: object, dtype: str) -> np.uint64:
    """The bits of ``value`` stored as ``dtype``, as the kernel's 64-bit fill argument (it keeps the low word)."""
    stored = np.asarray(value).astype(np_dtype(dtype)).reshape(1)
    return np.uint64(int(stored.view(f"uint{8 * stored.itemsize}")[0]))


def gather_launch(backend: Backend, axes: Sequence[Axis], base: int, dtype: str, src: object, dst: object,
                  fill: np.uint64, holds: list[object]) -> KernelLaunch | None:
    """The strided-gather launch of one simplified map (None for an empty output); the device copy of its
    metadata goes to ``holds``."""
    total = int(np.prod([a.size for a in axes], dtype=np.int64))
    if total == 0:
        return None
    meta = np.zeros(5 * MAX_RANK, dtype=np.int64)
    for k, field in enumerate(("size", "mod", "coef", "lo", "hi")):
        meta[k * MAX_RANK:k * MAX_RANK + len(axes)] = [getattr(a, field) for a in axes]
    meta_device = backend.asarray(meta)
    holds.append(meta_device)
    return linear(backend, "index.cu", f"strided_gather_{WORDS[dtype_itemsize(dtype)]}", total, (
        src, dst, meta_device, i32(len(axes)), i64(base), i64(total), fill))


class CudaStridedGather(Tactic):
    """Slice (any steps, negative ones included), Split (one launch per output), Expand, Tile and constant-mode
    Pad: one thread per output element reads its source through the layer's simplified map; any dtype, moved as
    words of its size."""

    family, name, backend, priority = "index", "cuda_strided_gather", "cuda", 10
    ops = ("Expand", "Pad", "Slice", "Split", "Tile")
    source, dtypes, capturable = "nvrtc", CUDA_STORAGE_DTYPES, True
    needs_activation = False
    cuda_kernels = MappingProxyType({"index.cu": (
        "strided_gather_u16", "strided_gather_u32", "strided_gather_u64", "strided_gather_u8")})

    def unsupported(self, layer: LayerSpec) -> str | None:
        if dtype_itemsize(layer.outputs[0].dtype) not in WORDS:
            return f"elements of {dtype_itemsize(layer.outputs[0].dtype)} bytes; the kernel moves 1, 2, 4 or 8"
        if layer.op == "Pad":
            if layer.attr("mode") != "constant":
                return f"{layer.attr('mode')} mode; the strided gather pads in constant mode only"
            if len(layer.inputs) > 1:
                return "the pad value is computed at run time; the strided gather fills with a build-time constant"
        for axes, _ in layer_maps(layer):
            rank = len(simplify(axes))
            if rank > MAX_RANK:
                return (f"the map from output to input has {rank} dimensions after merging the contiguous ones; "
                        f"the kernel indexes at most {MAX_RANK}")
        return None

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        dtype = layer.outputs[0].dtype
        consts = {i: backend.asarray(np.ascontiguousarray(v)) for i, v in layer.constants.items()}
        src = operand_refs(layer, consts)[0]
        fill = fill_bits(layer.attr("value", 0) if layer.op == "Pad" else 0, dtype)
        holds: list[object] = list(consts.values())
        launches = [gather_launch(backend, simplify(axes), base, dtype, src, Out(k), fill, holds)
                    for k, (axes, base) in enumerate(layer_maps(layer))]
        return plan(backend, *(x for x in launches if x is not None), holds=holds)


#: The index dtypes Gather takes, and the kernel suffix of each.
INDEX_TYPES = MappingProxyType({"int32": "i32", "int64": "i64"})


class CudaGather(Tactic):
    """Gather along an axis with indices that arrive at run time (an embedding lookup: constant data, token ids
    as input): one word-copy kernel; any data dtype, int32 or int64 indices, negative ones from the end. An index
    outside the axis has nothing to read: its output slice is zeros (the reference tactic refuses it instead)."""

    family, name, backend, priority = "index", "cuda_gather", "cuda", 10
    ops = ("Gather",)
    source, dtypes, capturable = "nvrtc", CUDA_STORAGE_DTYPES, True
    needs_activation = False
    cuda_kernels = MappingProxyType({"index.cu": (
        "gather_rt_u32_i32", "gather_rt_u32_i64", "gather_rt_u8_i32", "gather_rt_u8_i64")})

    def unsupported(self, layer: LayerSpec) -> str | None:
        if 1 in layer.constants:
            return "the indices are constants; cuda_gather_const gathers those"
        if layer.inputs[1].dtype not in INDEX_TYPES:
            return f"indices of dtype {layer.inputs[1].dtype}; the kernel reads {' or '.join(INDEX_TYPES)}"
        return None

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        shape, axis_index = layer.inputs[0].shape, int(layer.attr("axis"))
        axis_index += len(shape) if axis_index < 0 else 0
        inner_bytes = int(np.prod(shape[axis_index + 1:], dtype=np.int64)) * dtype_itemsize(layer.outputs[0].dtype)
        word = 4 if inner_bytes % 4 == 0 else 1
        n_idx = layer.inputs[1].size
        outer, inner = int(np.prod(shape[:axis_index], dtype=np.int64)), inner_bytes // word
        total = outer * n_idx * inner
        consts = {i: backend.asarray(np.ascontiguousarray(v)) for i, v in layer.constants.items()}
        data, indices = operand_refs(layer, consts)
        if total == 0:
            return plan(backend, holds=tuple(consts.values()))
        fn = f"gather_rt_u{8 * word}_{INDEX_TYPES[layer.inputs[1].dtype]}"
        return plan(backend, linear(backend, "index.cu", fn, total, (
            data, indices, Out(0), i64(n_idx), i64(shape[axis_index]), i64(inner), i64(total))),
            holds=tuple(consts.values()))


def gather_nd_offsets(data_shape: Sequence[int], indices: np.ndarray, batch_dims: int) -> tuple[np.ndarray, int]:
    """The element offset in ``data`` of each slice a GatherND with these constant ``indices`` copies (negative
    indices counted from the end), and the slice's length."""
    b, k = batch_dims, indices.shape[-1]
    batch = int(np.prod(data_shape[:b], dtype=np.int64))
    rows = int(np.prod(indices.shape[b:-1], dtype=np.int64))
    dims = np.array(data_shape[b:b + k], dtype=np.int64)
    strides = np.array(contiguous_strides(data_shape)[b:b + k], dtype=np.int64)
    index = indices.astype(np.int64).reshape(batch, rows, k)
    index = np.where(index < 0, index + dims, index)
    batch_stride = int(np.prod(data_shape[b:], dtype=np.int64))
    offsets = (index * strides).sum(axis=-1) + np.arange(batch, dtype=np.int64)[:, None] * batch_stride
    return offsets.reshape(-1), int(np.prod(data_shape[b + k:], dtype=np.int64))


class CudaGatherNDConstant(Tactic):
    """GatherND with indices known at build time (the text models' mask: a reshape written as a GatherND): the
    offset of every slice is computed on the host, and one kernel copies the rows; any dtype."""

    family, name, backend, priority = "index", "cuda_gather_nd_const", "cuda", 10
    ops = ("GatherND",)
    source, dtypes, capturable = "nvrtc", CUDA_STORAGE_DTYPES, True
    cuda_kernels = MappingProxyType({"index.cu": ("gather_rows_u16", "gather_rows_u32", "gather_rows_u64",
                                                  "gather_rows_u8")})

    def unsupported(self, layer: LayerSpec) -> str | None:
        if 1 not in layer.constants:
            return "only constant indices (the offsets are computed when the engine is built)"
        if dtype_itemsize(layer.outputs[0].dtype) not in WORDS:
            return f"elements of {dtype_itemsize(layer.outputs[0].dtype)} bytes; the kernel moves 1, 2, 4 or 8"
        return None

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        offsets, inner = gather_nd_offsets(layer.inputs[0].shape, layer.constants[1], int(layer.attr("batch_dims")))
        total = offsets.size * inner
        if total == 0:
            return plan(backend)
        offsets_device = backend.asarray(np.ascontiguousarray(offsets))
        word = WORDS[dtype_itemsize(layer.outputs[0].dtype)]
        return plan(backend, linear(backend, "index.cu", f"gather_rows_{word}", total, (
            In(0), offsets_device, Out(0), i64(inner), i64(total))), holds=(offsets_device,))


#: The Range dtypes, and the kernel of each.
RANGE_KERNELS = MappingProxyType({"int16": "range_i16", "int32": "range_i32", "int64": "range_i64"})


class CudaRange(Tactic):
    """A Range whose length is a dynamic dimension (arange(sequence) in a dynamic engine): one fill kernel, exact
    in 64-bit arithmetic (as the reference computes it), stored in int16, int32 or int64."""

    family, name, backend, priority = "index", "cuda_range", "cuda", 10
    ops = ("Range",)
    source, dtypes, capturable = "nvrtc", ("int16", "int32", "int64"), True
    cuda_kernels = MappingProxyType({"index.cu": ("range_i16", "range_i32", "range_i64")})

    def unsupported(self, layer: LayerSpec) -> str | None:
        dtype = layer.outputs[0].dtype
        return None if dtype in RANGE_KERNELS else f"dtype {dtype}; the kernel fills {', '.join(RANGE_KERNELS)}"

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        (total,) = layer.outputs[0].shape
        if total == 0:
            return plan(backend)
        return plan(backend, linear(backend, "index.cu", RANGE_KERNELS[layer.outputs[0].dtype], total, (
            Out(0), i64(int(layer.attr("start"))), i64(int(layer.attr("delta"))), i64(total))))


class CudaGatherElements(Tactic):
    """GatherElements, indices constant or read at run time (a dynamic engine's position ids): one thread per
    output element reads the data at its coordinates with the axis's one replaced by the index there; any dtype,
    moved as words of its size; int32 or int64 indices, negative ones from the end. An index outside the axis has
    nothing to read: its element is zero (the reference tactic refuses it instead)."""

    family, name, backend, priority = "index", "cuda_gather_elements", "cuda", 10
    ops = ("GatherElements",)
    source, dtypes, capturable = "nvrtc", CUDA_STORAGE_DTYPES, True
    needs_activation = False  # the data may be a constant (BERT's position table)
    cuda_kernels = MappingProxyType({"index.cu": tuple(
        f"gather_elements_{w}_{i}" for w in ("u16", "u32", "u64", "u8") for i in ("i32", "i64"))})

    def unsupported(self, layer: LayerSpec) -> str | None:
        if dtype_itemsize(layer.outputs[0].dtype) not in WORDS:
            return f"elements of {dtype_itemsize(layer.outputs[0].dtype)} bytes; the kernel moves 1, 2, 4 or 8"
        if layer.inputs[1].dtype not in INDEX_TYPES:
            return f"indices of dtype {layer.inputs[1].dtype}; the kernel reads {' or '.join(INDEX_TYPES)}"
        if len(layer.inputs[1].shape) > MAX_RANK:
            return f"rank {len(layer.inputs[1].shape)}; the kernel indexes at most {MAX_RANK} dimensions"
        return None

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        data_shape, index_shape = layer.inputs[0].shape, layer.inputs[1].shape
        rank, axis_index = len(index_shape), int(layer.attr("axis"))
        total = int(np.prod(index_shape, dtype=np.int64))
        consts = {i: backend.asarray(np.ascontiguousarray(v)) for i, v in layer.constants.items()}
        if total == 0:
            return plan(backend, holds=tuple(consts.values()))
        meta = np.zeros(2 * MAX_RANK, dtype=np.int64)
        meta[:rank] = index_shape
        meta[MAX_RANK:MAX_RANK + rank] = contiguous_strides(data_shape)
        meta_device = backend.asarray(meta)
        data, indices = operand_refs(layer, consts)
        fn = f"gather_elements_{WORDS[dtype_itemsize(layer.outputs[0].dtype)]}_{INDEX_TYPES[layer.inputs[1].dtype]}"
        return plan(backend, linear(backend, "index.cu", fn, total, (
            data, indices, Out(0), meta_device, i32(rank), i32(axis_index), i64(data_shape[axis_index]),
            i64(total))), holds=(*consts.values(), meta_device))


class CudaGatherND(Tactic):
    """GatherND with indices read at run time (a dynamic engine's mask): one thread per output element finds its
    row's index tuple, its offset in the data and copies; any dtype, moved as words of its size. A tuple with an
    entry outside its axis has nothing to read: its row is zeros (the reference tactic refuses it instead)."""

    family, name, backend, priority = "index", "cuda_gather_nd", "cuda", 10
    ops = ("GatherND",)
    source, dtypes, capturable = "nvrtc", CUDA_STORAGE_DTYPES, True
    needs_activation = False  # the data may be a constant
    cuda_kernels = MappingProxyType({"index.cu": ("gather_nd_rt_u16", "gather_nd_rt_u32", "gather_nd_rt_u64",
                                                  "gather_nd_rt_u8")})

    def unsupported(self, layer: LayerSpec) -> str | None:
        if 1 in layer.constants:
            return "constant indices; cuda_gather_nd_const computes their offsets when the engine is built"
        if dtype_itemsize(layer.outputs[0].dtype) not in WORDS:
            return f"elements of {dtype_itemsize(layer.outputs[0].dtype)} bytes; the kernel moves 1, 2, 4 or 8"
        if layer.inputs[1].dtype != "int64":
            return f"indices of dtype {layer.inputs[1].dtype}; the kernel reads int64"
        return None

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        data_shape, index_shape = layer.inputs[0].shape, layer.inputs[1].shape
        b, k = int(layer.attr("batch_dims")), int(index_shape[-1])
        batch = int(np.prod(data_shape[:b], dtype=np.int64))
        rows = int(np.prod(index_shape[:-1], dtype=np.int64))
        inner = int(np.prod(data_shape[b + k:], dtype=np.int64))
        total = rows * inner
        if total == 0:
            return plan(backend)
        strides = contiguous_strides(data_shape)
        meta = np.array([*data_shape[b:b + k], *strides[b:b + k]], dtype=np.int64)
        meta_device = backend.asarray(meta)
        consts = {i: backend.asarray(np.ascontiguousarray(v)) for i, v in layer.constants.items()}
        data, indices = operand_refs(layer, consts)
        fn = f"gather_nd_rt_{WORDS[dtype_itemsize(layer.outputs[0].dtype)]}"
        batch_stride = int(np.prod(data_shape[b:], dtype=np.int64))
        return plan(backend, linear(backend, "index.cu", fn, total, (
            data, indices, Out(0), meta_device, i32(k), i64(rows // max(batch, 1)), i64(batch_stride), i64(inner),
            i64(total))), holds=(*consts.values(), meta_device))


TACTICS: tuple[Tactic, ...] = (CudaGather(), CudaGatherElements(), CudaGatherND(), CudaGatherNDConstant(),
                               CudaRange(), CudaStridedGather())

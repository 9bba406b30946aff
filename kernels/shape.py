"""Data-movement tactics: Reshape, Flatten, Squeeze, Unsqueeze (zero-copy aliases), Identity (a copy), Concat,
Transpose and Gather with constant indices.

The NVRTC Concat (``shape.cu``) copies each input as a (rows, cols) block into its column range of the output
viewed as (rows, total cols), moving 32-bit words for elements of 4 bytes or more, else bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np

from reprobuild.core.dtypes import ALL, np_dtype
from reprobuild.core.dtypes import itemsize as dtype_itemsize
from reprobuild.kernels.backend import Backend
from reprobuild.kernels.cuda_launch import i32, i64, linear, operand_refs, plan
from reprobuild.kernels.launch import In, Out
from reprobuild.kernels.tactic import CUDA_STORAGE_DTYPES, Kernel, LayerSpec, Tactic, positional


class AliasTactic(Tactic):
    """The output is a view of the input's memory: the memory planner gives both the same bytes, nothing runs.
    A Transpose qualifies when it moves only dimensions of size 1 (PyTorch's exports are full of them, e.g.
    (1, S, D) -> (S, 1, D)): its elements keep their order, so it is a reshape."""

    family, ops, priority, source = "shape", ("Flatten", "Reshape", "Squeeze", "Transpose", "Unsqueeze"), 10, "builtin"
    aliases_input: ClassVar[bool] = True

    def unsupported(self, layer: LayerSpec) -> str | None:
        if layer.constants:
            return "the input is a constant, so there is no activation memory to alias"
        if layer.op == "Transpose":
            shape = layer.inputs[0].shape
            moved = [p for p in layer.attr("perm") if shape[p] != 1]
            if moved != sorted(moved):
                return "the permutation reorders dimensions larger than 1, so the elements change order"
        return None

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        def run(inputs: Sequence[Any], outputs: Sequence[Any], workspace: Any) -> None:
            return None

        return run


class CpuAlias(AliasTactic):
    name, backend, dtypes = "cpu_alias", "cpu", ALL


class CudaAlias(AliasTactic):
    name, backend, dtypes, capturable = "cuda_alias", "cuda", CUDA_STORAGE_DTYPES, True

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        return plan(backend)


class CopyTactic(Tactic):
    """Reshape/Flatten/Identity as a real copy: Identity where it must stay (a network output copied from an
    input or a constant)."""

    family, ops, priority = "shape", ("Flatten", "Identity", "Reshape"), 20
    needs_activation = False

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        shape = layer.outputs[0].shape
        xp = backend.xp
        consts = {i: backend.asarray(np.asarray(v, order="C")) for i, v in layer.constants.items()}

        def run(inputs: Sequence[Any], outputs: Sequence[Any], workspace: Any) -> None:
            xp.copyto(outputs[0], positional(layer, consts, inputs)[0].reshape(shape))

        return run


class CpuCopy(CopyTactic):
    name, backend, dtypes = "cpu_copy", "cpu", ALL


def _word(nbytes: int, itemsize: int) -> tuple[int, str]:
    """Move 32-bit words for elements of 4 bytes or more (their buffers are 4-byte aligned wherever they start
    in a row), else bytes: the word size and shape.cu's kernel for it."""
    return (4, "copy_block_u32") if itemsize >= 4 and nbytes % 4 == 0 else (1, "copy_block_u8")


class CudaCopy(Tactic):
    """Reshape/Flatten/Identity as a real copy (shape.cu's block copy over the bytes), for any dtype."""

    family, name, backend, priority = "shape", "cuda_copy", "cuda", 20
    ops = ("Flatten", "Identity", "Reshape", "Squeeze", "Unsqueeze")
    needs_activation = False
    source, dtypes, capturable = "nvrtc", CUDA_STORAGE_DTYPES, True
    cuda_kernels = MappingProxyType({"shape.cu": ("copy_block_u32", "copy_block_u8")})

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        size = dtype_itemsize(layer.outputs[0].dtype)
        nbytes = int(np.prod(layer.outputs[0].shape, dtype=np.int64)) * size
        word, fn = _word(nbytes, size)
        consts = {i: backend.asarray(np.asarray(v, order="C")) for i, v in layer.constants.items()}
        src = consts.get(0, In(0))
        cols = nbytes // word
        if not cols:
            return plan(backend, holds=tuple(consts.values()))
        return plan(backend, linear(backend, "shape.cu", fn, cols, (src, Out(0), i64(1), i64(cols), i64(cols),
                                                                    i64(0))), holds=tuple(consts.values()))


class ConcatTactic(Tactic):
    family, ops, priority = "shape", ("Concat",), 10
    needs_activation = False

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        axis = int(layer.attr("axis"))
        consts = {i: backend.asarray(np.asarray(v, order="C")) for i, v in layer.constants.items()}
        bounds = np.cumsum([0] + [sig.shape[axis] for sig in layer.inputs]).tolist()
        lead = (slice(None),) * axis

        def run(inputs: Sequence[Any], outputs: Sequence[Any], workspace: Any) -> None:
            for i, part in enumerate(positional(layer, consts, inputs)):
                index = (*lead, slice(bounds[i], bounds[i + 1]))
                outputs[0][index] = part

        return run


class CpuConcat(ConcatTactic):
    name, backend, dtypes = "cpu_slices", "cpu", ALL


class CudaConcatKernel(Tactic):
    """Concat as one block-copy launch per input (shape.cu), for any dtype: the kernel moves bytes or words."""

    family, ops, name, backend, priority = "shape", ("Concat",), "cuda_concat_kernel", "cuda", 10
    needs_activation = False
    source, capturable = "nvrtc", True
    cuda_kernels = MappingProxyType({"shape.cu": ("copy_block_u32", "copy_block_u8")})
    dtypes = CUDA_STORAGE_DTYPES

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        axis, out_shape = int(layer.attr("axis")), layer.outputs[0].shape
        itemsize = dtype_itemsize(layer.outputs[0].dtype)
        rows = int(np.prod(out_shape[:axis], dtype=np.int64))
        inner_bytes = int(np.prod(out_shape[axis + 1:], dtype=np.int64)) * itemsize
        widths = [sig.shape[axis] * inner_bytes for sig in layer.inputs]  # bytes per row of each input
        starts = np.cumsum([0, *widths[:-1]]).tolist()
        word, fn = _word(sum(widths) if all(v % 4 == 0 for v in widths) else 1, itemsize)
        consts = {i: backend.asarray(v.astype(np_dtype(layer.outputs[0].dtype))) for i, v in layer.constants.items()}
        dst_ld, launches = sum(widths) // word, []
        for src, width, start in zip(operand_refs(layer, consts), widths, starts):
            cols = width // word
            if cols:
                launches.append(linear(backend, "shape.cu", fn, rows * cols,
                                       (src, Out(0), i64(rows), i64(cols), i64(dst_ld), i64(start // word))))
        return plan(backend, *launches, holds=tuple(consts.values()))


#: The most dimensions the transpose kernel indexes (after dropping size-1 ones); MAX_RANK in shape.cu.
MAX_RANK = 6
_WORDS = {1: "u8", 2: "u16", 4: "u32", 8: "u64"}


def transpose_meta(shape: tuple[int, ...], perm: tuple[int, ...]) -> tuple[list[int], list[int]]:
    """The output shape and, per output dimension, the source stride (elements), size-1 dimensions dropped."""
    strides = [int(np.prod(shape[d + 1:], dtype=np.int64)) for d in range(len(shape))]
    kept = [(shape[p], strides[p]) for p in perm if shape[p] != 1]
    return [n for n, _ in kept], [s for _, s in kept]


class CudaTranspose(Tactic):
    """One thread per output element reading its source through permuted strides; any dtype, moved as words."""

    family, ops, name, backend, priority = "shape", ("Transpose",), "cuda_transpose", "cuda", 10
    source, dtypes, capturable = "nvrtc", CUDA_STORAGE_DTYPES, True
    cuda_kernels = MappingProxyType({"shape.cu": ("transpose_u16", "transpose_u32", "transpose_u64", "transpose_u8")})

    def unsupported(self, layer: LayerSpec) -> str | None:
        out_shape, _ = transpose_meta(layer.inputs[0].shape, tuple(layer.attr("perm")))
        if len(out_shape) > MAX_RANK:
            return f"{len(out_shape)} dimensions of size > 1; the kernel indexes at most {MAX_RANK}"
        return None

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        shape, strides = transpose_meta(layer.inputs[0].shape, tuple(layer.attr("perm")))
        meta = np.zeros(2 * MAX_RANK, dtype=np.int64)
        meta[:len(shape)], meta[MAX_RANK:MAX_RANK + len(strides)] = shape, strides
        total = int(np.prod(layer.outputs[0].shape, dtype=np.int64))
        word = _WORDS[dtype_itemsize(layer.outputs[0].dtype)]
        meta_device = backend.asarray(meta)
        return plan(backend, linear(backend, "shape.cu", f"transpose_{word}", max(total, 1), (
            In(0), Out(0), meta_device, i32(len(shape)), i64(total))), holds=(meta_device,))


class CudaGatherConstant(Tactic):
    """Gather along an axis with indices known at build time: one word-copy kernel; any dtype."""

    family, ops, name, backend, priority = "shape", ("Gather",), "cuda_gather_const", "cuda", 10
    source, dtypes, capturable = "nvrtc", CUDA_STORAGE_DTYPES, True
    cuda_kernels = MappingProxyType({"shape.cu": ("gather_u32", "gather_u8")})

    def unsupported(self, layer: LayerSpec) -> str | None:
        if 1 not in layer.constants:
            return "only constant indices"
        axis_len = layer.inputs[0].shape[int(layer.attr("axis"))]
        idx = layer.constants[1]
        if idx.size and (idx.min() < -axis_len or idx.max() >= axis_len):
            return f"an index is outside [-{axis_len}, {axis_len}); the reference tactic reports it"
        return None

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        shape, axis = layer.inputs[0].shape, int(layer.attr("axis"))
        itemsize = dtype_itemsize(layer.outputs[0].dtype)
        inner_bytes = int(np.prod(shape[axis + 1:], dtype=np.int64)) * itemsize
        word = 4 if inner_bytes % 4 == 0 else 1
        idx = layer.constants[1].astype(np.int64).reshape(-1)
        idx = np.where(idx < 0, idx + shape[axis], idx)
        outer, inner = int(np.prod(shape[:axis], dtype=np.int64)), inner_bytes // word
        total = outer * idx.size * inner
        idx_device = backend.asarray(np.ascontiguousarray(idx))
        return plan(backend, linear(backend, "shape.cu", f"gather_u{8 * word}", max(total, 1), (
            In(0), idx_device, Out(0), i64(idx.size), i64(shape[axis]), i64(inner), i64(total))),
            holds=(idx_device,))


TACTICS: tuple[Tactic, ...] = (
    CpuAlias(), CpuConcat(), CpuCopy(), CudaAlias(), CudaConcatKernel(), CudaCopy(), CudaGatherConstant(),
    CudaTranspose(),
)

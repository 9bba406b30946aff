"""Reduction tactics: ReduceSum, ReduceMean, ReduceMax and ReduceMin over any set of axes that is one contiguous
group once the dimensions of size 1 are dropped (the last axis of a transformer's activations, a global pool's
spatial axes, every axis), and CumSum along one axis. CUDA tactics compile ``reduction.cu``.

The input is viewed as (outer, len, inner), ``len`` being the product of the reduced dimensions: for the float
types, with ``inner`` 1, one block reduces each row by ``reduce.cuh``'s fixed tree; otherwise one thread reduces
each column in order, summing in double. int32, int64 and bool (Sum, Max, Min; not the integer Mean, whose
rounding the reference tactic keeps) are reduced one thread per output, exactly. The float orders are fixed by the
shapes alone, never by the grid a device gets, so results repeat bit for bit. Reductions over axes that are not
contiguous (axes 0 and 2 of a rank-3 tensor) would need a transpose first and are left to the reference tactic.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

import numpy as np

from reprobuild.kernels.backend import Backend
from reprobuild.kernels.cuda_launch import i32, i64, linear, per_row, plan
from reprobuild.kernels.launch import In, Out
from reprobuild.kernels.tactic import Kernel, LayerSpec, Tactic

#: The op code of each reduction; OP_* in reduction.cu.
OPS = MappingProxyType({"ReduceSum": 0, "ReduceMean": 1, "ReduceMax": 2, "ReduceMin": 3})


def reduction_view(shape: Sequence[int], axes: Sequence[int]) -> tuple[int, int, int] | None:
    """(outer, len, inner) of reducing ``axes`` of a contiguous ``shape``: the reduced dimensions, size-1 ones
    aside, must be neighbours; None when they are not."""
    dims = [(n, d in axes) for d, n in enumerate(shape) if n != 1]
    reduced = [k for k, (_, r) in enumerate(dims) if r]
    if not reduced:
        return int(np.prod(shape, dtype=np.int64)), 1, 1
    first, last = reduced[0], reduced[-1]
    if last - first + 1 != len(reduced):
        return None

    def size(part: Sequence[tuple[int, bool]]) -> int:
        return int(np.prod([n for n, _ in part], dtype=np.int64))

    return size(dims[:first]), size(dims[first:last + 1]), size(dims[last + 1:])


#: The exact reductions' kernel of each non-float dtype (any build of the file: the float32 one).
EXACT = MappingProxyType({"bool": "reduce_exact_bool", "int32": "reduce_exact_i32", "int64": "reduce_exact_i64"})
FLOAT_REDUCTIONS = ("float32", "float16", "bfloat16")


class CudaReduce(Tactic):
    """ReduceSum, ReduceMean, ReduceMax and ReduceMin of float32, float16 or bfloat16 over one contiguous group of
    axes, in float, and ReduceSum/Max/Min of int32, int64 and bool, exactly (see the module docstring)."""

    family, name, backend, priority = "reduce", "cuda_reduce", "cuda", 10
    ops = tuple(OPS)
    source, capturable = "nvrtc", True
    cuda_kernels = MappingProxyType({"reduction.cu": (
        "reduce_cols", "reduce_exact_bool", "reduce_exact_i32", "reduce_exact_i64", "reduce_rows")})
    dtypes = (*FLOAT_REDUCTIONS, *EXACT)
    per_dtype_build = True

    def kernel_dtype(self, layer: LayerSpec) -> str:
        """The float build for the float types; the exact kernels are the same in every build (float32's)."""
        dtype = layer.inputs[0].dtype
        return dtype if dtype in FLOAT_REDUCTIONS else "float32"

    def unsupported(self, layer: LayerSpec) -> str | None:
        if layer.op == "ReduceMean" and layer.inputs[0].dtype in EXACT:
            return (f"the mean of {layer.inputs[0].dtype} values, rounded toward zero as the reference computes "
                    "it exactly; this tactic averages floats only")
        shape, axes = layer.inputs[0].shape, tuple(layer.attr("axes"))
        if reduction_view(shape, axes) is None:
            return (f"reduces axes {list(axes)} of {list(shape)}, which are not one contiguous group (after "
                    "dropping dimensions of size 1); the kernel reduces the middle of an (outer, len, inner) view")
        return None

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        view = reduction_view(layer.inputs[0].shape, tuple(layer.attr("axes")))
        assert view is not None, "unsupported() refuses layers without a contiguous view"
        outer, length, inner = view
        op, dtype = i32(OPS[layer.op]), self.kernel_dtype(layer)
        if outer * inner == 0:
            return plan(backend)
        if layer.inputs[0].dtype in EXACT:
            return plan(backend, linear(backend, "reduction.cu", EXACT[layer.inputs[0].dtype], outer * inner, (
                In(0), Out(0), i64(outer), i64(length), i64(inner), op), dtype=dtype))
        if inner == 1:
            return plan(backend, per_row(backend, "reduction.cu", "reduce_rows", outer, (
                In(0), Out(0), i64(outer), i64(length), op), dtype=dtype))
        return plan(backend, linear(backend, "reduction.cu", "reduce_cols", outer * inner, (
            In(0), Out(0), i64(outer), i64(length), i64(inner), op), dtype=dtype))


#: The integer dtypes CumSum scans (with their own kernels, in any build of the file) and the kernel of each.
INT_SCANS = MappingProxyType({"int32": "cumsum_cols_i32", "int64": "cumsum_cols_i64"})
FLOAT_SCANS = ("float32", "float16", "bfloat16")


class CudaCumSum(Tactic):
    """CumSum along one axis (exclusive, reverse), one thread per column adding in order: float32 results equal
    NumPy's bit for bit; float16 and bfloat16 accumulate in float and round once; int32 and int64 wrap."""

    family, ops, name, backend, priority = "reduce", ("CumSum",), "cuda_cumsum", "cuda", 10
    source, capturable = "nvrtc", True
    cuda_kernels = MappingProxyType({"reduction.cu": ("cumsum_cols", "cumsum_cols_i32", "cumsum_cols_i64")})
    dtypes = (*FLOAT_SCANS, *INT_SCANS)
    per_dtype_build = True

    def kernel_dtype(self, layer: LayerSpec) -> str:
        """The float build for the float types; the integer kernels are the same in every build (float32's)."""
        dtype = layer.inputs[0].dtype
        return dtype if dtype in FLOAT_SCANS else "float32"

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        shape, axis = layer.inputs[0].shape, int(layer.attr("axis"))
        outer, length = int(np.prod(shape[:axis], dtype=np.int64)), shape[axis]
        inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
        if outer * inner * length == 0:
            return plan(backend)
        fn = INT_SCANS.get(layer.inputs[0].dtype, "cumsum_cols")
        return plan(backend, linear(backend, "reduction.cu", fn, outer * inner, (
            In(0), Out(0), i64(outer), i64(length), i64(inner), i32(int(layer.attr("exclusive"))),
            i32(int(layer.attr("reverse")))), dtype=self.kernel_dtype(layer)))


TACTICS: tuple[Tactic, ...] = (CudaCumSum(), CudaReduce())

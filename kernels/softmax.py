"""Softmax along one axis (opset >= 13), or over the flattened trailing dimensions (``coerce_2d``, opset < 13).
CUDA tactics compile ``softmax.cu``.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from reprobuild.kernels.backend import Backend
from reprobuild.kernels.cuda_launch import i32, i64, per_row, plan
from reprobuild.kernels.launch import In, Out
from reprobuild.kernels.tactic import Kernel, LayerSpec, Tactic


def rows_and_cols(layer: LayerSpec) -> tuple[int, int, int]:
    """(outer, axis length, inner): softmax runs over the middle dimension of this 3-D view of the input."""
    shape, axis = layer.inputs[0].shape, int(layer.attr("axis"))
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    if layer.attr("coerce_2d", 0):
        return outer, int(np.prod(shape[axis:], dtype=np.int64)), 1
    return outer, shape[axis], int(np.prod(shape[axis + 1:], dtype=np.int64))


class CpuSoftmax(Tactic):
    family, ops, name, backend, priority = "softmax", ("Softmax",), "cpu_numpy", "cpu", 10

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        view = rows_and_cols(layer)

        def run(inputs: Sequence[Any], outputs: Sequence[Any], workspace: Any) -> None:
            x, out = inputs[0].reshape(view), outputs[0].reshape(view)
            np.subtract(x, x.max(axis=1, keepdims=True), out=out)
            np.exp(out, out=out)
            out /= out.sum(axis=1, keepdims=True)

        return run


class CudaRowwiseSoftmax(Tactic):
    """One block per (outer, inner) row: max and sum each by a fixed tree, then exp(x - max) / sum. Version 2: the
    trees are reduce.cuh's (the same order and results)."""

    family, ops, name, backend, priority = "softmax", ("Softmax",), "cuda_rowwise", "cuda", 10
    version = 2
    capturable = True
    source = "nvrtc"
    cuda_kernels = MappingProxyType({"softmax.cu": ("softmax_rows",)})
    dtypes = ("float32", "float16", "bfloat16")
    per_dtype_build = True

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        outer, length, inner = rows_and_cols(layer)
        rows = outer * inner
        return plan(backend, per_row(backend, "softmax.cu", "softmax_rows", rows, (
            In(0), Out(0), i64(rows), i32(length, "the softmax axis"), i64(inner)), dtype=self.kernel_dtype(layer)))


TACTICS: tuple[Tactic, ...] = (CpuSoftmax(), CudaRowwiseSoftmax())

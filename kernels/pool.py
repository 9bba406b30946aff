"""Pooling tactics: MaxPool and AveragePool (2-D; pads, strides, dilations, ceil_mode, count_include_pad) and
GlobalAveragePool. CUDA tactics compile ``pool.cu``.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from reprobuild.kernels.backend import Backend
from reprobuild.kernels.cuda_launch import i32, i64, linear, per_row, plan
from reprobuild.kernels.launch import In, Out
from reprobuild.kernels.tactic import Kernel, LayerSpec, Tactic


def unsupported_pool(layer: LayerSpec) -> str | None:
    if len(layer.outputs) != 1:
        return "only the pooled output Y; MaxPool's Indices output is left to the reference tactic"
    if len(layer.inputs[0].shape) != 4:
        return f"only 2-D pooling (a rank-4 input); this one has rank {len(layer.inputs[0].shape)}"
    return None


class PoolGeometry:
    def __init__(self, layer: LayerSpec) -> None:
        self.n, self.c, self.h, self.w = layer.inputs[0].shape
        self.oh, self.ow = layer.outputs[0].shape[2:]
        self.kh, self.kw = layer.attr("kernel_shape")
        self.sh, self.sw = layer.attr("strides")
        self.dh, self.dw = layer.attr("dilations", (1, 1))
        self.pt, self.pl, self.pb, self.pr = layer.attr("pads")
        self.is_max = layer.op == "MaxPool"
        self.count_include_pad = bool(layer.attr("count_include_pad", 0))
        # ceil_mode can make the last window run past the end pad; extend the padded input to cover it.
        self.eb = max(0, (self.oh - 1) * self.sh + self.dh * (self.kh - 1) + 1 - (self.h + self.pt + self.pb))
        self.er = max(0, (self.ow - 1) * self.sw + self.dw * (self.kw - 1) + 1 - (self.w + self.pl + self.pr))


def _windows(padded: np.ndarray, g: PoolGeometry) -> np.ndarray:
    span = (g.dh * (g.kh - 1) + 1, g.dw * (g.kw - 1) + 1)
    win = sliding_window_view(padded, span, axis=(-2, -1))
    return win[..., ::g.sh, ::g.sw, ::g.dh, ::g.dw][..., :g.oh, :g.ow, :, :]


def average_divisors(g: PoolGeometry) -> np.ndarray:
    """How many elements each output averages: the window clipped to the input (and explicit pads if counted)."""
    inside = np.zeros((g.h + g.pt + g.pb + g.eb, g.w + g.pl + g.pr + g.er), dtype=np.float64)
    if g.count_include_pad:
        inside[:g.h + g.pt + g.pb, :g.w + g.pl + g.pr] = 1.0
    else:
        inside[g.pt:g.pt + g.h, g.pl:g.pl + g.w] = 1.0
    return _windows(inside, g).sum(axis=(-2, -1)).astype(np.float32)


class CpuWindowPool(Tactic):
    family, ops, name, backend, priority = "pool", ("AveragePool", "MaxPool"), "cpu_window", "cpu", 10

    def unsupported(self, layer: LayerSpec) -> str | None:
        return unsupported_pool(layer)

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        g = PoolGeometry(layer)
        fill = -np.inf if g.is_max else 0.0
        divisors = None if g.is_max else average_divisors(g)

        def run(inputs: Sequence[Any], outputs: Sequence[Any], workspace: Any) -> None:
            padded = np.pad(inputs[0], ((0, 0), (0, 0), (g.pt, g.pb + g.eb), (g.pl, g.pr + g.er)),
                            constant_values=fill)
            win, out = _windows(padded, g), outputs[0]
            if g.is_max:
                np.max(win, axis=(-2, -1), out=out)
            else:
                np.sum(win, axis=(-2, -1), out=out)
                out /= divisors

        return run


class CpuGlobalAveragePool(Tactic):
    family, ops, name, backend, priority = "pool", ("GlobalAveragePool",), "cpu_global_mean", "cpu", 10

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        axes = tuple(range(2, len(layer.inputs[0].shape)))

        def run(inputs: Sequence[Any], outputs: Sequence[Any], workspace: Any) -> None:
            np.mean(inputs[0], axis=axes, keepdims=True, out=outputs[0])

        return run


class CudaWindowPool(Tactic):
    """One thread per output; the average divides by the host-computed ``average_divisors`` map."""

    family, ops, name, backend, priority = "pool", ("AveragePool", "MaxPool"), "cuda_window", "cuda", 10
    capturable = True
    source = "nvrtc"
    cuda_kernels = MappingProxyType({"pool.cu": ("pool_window",)})
    dtypes = ("float32", "float16", "bfloat16")
    per_dtype_build = True

    def unsupported(self, layer: LayerSpec) -> str | None:
        return unsupported_pool(layer)

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        g = PoolGeometry(layer)
        divisors = None if g.is_max else backend.asarray(average_divisors(g))
        total = g.n * g.c * g.oh * g.ow
        sizes = tuple(i32(v) for v in (g.h, g.w, g.oh, g.ow, g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl))
        return plan(backend, linear(backend, "pool.cu", "pool_window", total, (
            In(0), Out(0), divisors, *sizes, i32(g.is_max), i64(total)), dtype=self.kernel_dtype(layer)),
            holds=(divisors,))


class CudaGlobalMean(Tactic):
    """One block per (n, c): fixed per-thread slices, then a fixed tree; the sum divided by the plane size.
    Version 2: the tree is reduce.cuh's (the same order and sums)."""

    family, ops, name, backend, priority = "pool", ("GlobalAveragePool",), "cuda_global_mean", "cuda", 10
    version = 2
    capturable = True
    source = "nvrtc"
    cuda_kernels = MappingProxyType({"pool.cu": ("global_mean",)})
    dtypes = ("float32", "float16", "bfloat16")
    per_dtype_build = True

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        shape = layer.inputs[0].shape
        planes, size = shape[0] * shape[1], int(np.prod(shape[2:], dtype=np.int64))
        return plan(backend, per_row(backend, "pool.cu", "global_mean", planes,
                                     (In(0), Out(0), i64(planes), i64(size)), dtype=self.kernel_dtype(layer)))


TACTICS: tuple[Tactic, ...] = (CpuGlobalAveragePool(), CpuWindowPool(), CudaGlobalMean(), CudaWindowPool())

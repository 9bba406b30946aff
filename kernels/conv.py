"""2-D convolution tactics (ONNX Conv: pads, strides, dilations, groups, optional bias).

CPU: im2col + one BLAS matmul per group; and a tap-by-tap accumulation (one small matmul per kernel tap, in a
fixed order). CUDA (``conv.cu``): im2col into the workspace, then cuBLAS or the tiled SGEMM of ``gemm.cu`` over
every (image, group); a direct convolution; and cuBLAS alone for 1x1 convolutions.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from reprobuild.kernels.backend import Backend
from reprobuild.kernels.cuda_launch import MAX_GRID_YZ, i32, i64, kernel, launch_linear, on_stream
from reprobuild.kernels.gemm import TiledGemmLaunch
from reprobuild.kernels.tactic import Kernel, LayerSpec, Tactic, aligned, workspace_view


class ConvGeometry:
    """Every size a convolution kernel needs, derived once from the layer."""

    def __init__(self, layer: LayerSpec) -> None:
        self.n, self.c, self.h, self.w = layer.inputs[0].shape
        self.m, self.cg, self.kh, self.kw = layer.inputs[1].shape
        self.oh, self.ow = layer.outputs[0].shape[2:]
        self.group = int(layer.attr("group"))
        self.mg = self.m // self.group
        self.pt, self.pl, self.pb, self.pr = layer.attr("pads")
        self.sh, self.sw = layer.attr("strides")
        self.dh, self.dw = layer.attr("dilations")
        self.hp, self.wp = self.h + self.pt + self.pb, self.w + self.pl + self.pr
        self.k = self.cg * self.kh * self.kw  # reduction length of one output
        self.has_bias = len(layer.inputs) > 2

    @property
    def padded_shape(self) -> tuple[int, ...]:
        return (self.n, self.c, self.hp, self.wp)

    @property
    def is_pointwise(self) -> bool:
        return (self.kh, self.kw, self.sh, self.sw, self.pt, self.pl, self.pb, self.pr) == (1, 1, 1, 1, 0, 0, 0, 0)


def unsupported_conv(layer: LayerSpec) -> str | None:
    """What every hand-written convolution needs: a 2-D convolution with constant weights (and bias)."""
    if len(layer.inputs[0].shape) != 4:
        return f"only 2-D convolution (a rank-4 input); this one has rank {len(layer.inputs[0].shape)}"
    if any(i not in layer.constants for i in range(1, len(layer.inputs))):
        return "the weight and bias must be constants (initializers); this layer reads them at run time"
    return None


def _pad_into(x: np.ndarray, padded: np.ndarray, g: ConvGeometry) -> None:
    padded.fill(0.0)
    padded[:, :, g.pt:g.pt + g.h, g.pl:g.pl + g.w] = x


def _tap(padded: np.ndarray, g: ConvGeometry, i: int, j: int) -> np.ndarray:
    """The input pixels kernel tap (i, j) meets at every output position: (N, C, OH, OW), a strided view."""
    r0, c0 = i * g.dh, j * g.dw
    return padded[:, :, r0:r0 + g.sh * (g.oh - 1) + 1:g.sh, c0:c0 + g.sw * (g.ow - 1) + 1:g.sw]


class CpuIm2colGemm(Tactic):
    family, ops, name, backend, priority = "conv", ("Conv",), "cpu_im2col_gemm", "cpu", 10

    def unsupported(self, layer: LayerSpec) -> str | None:
        return unsupported_conv(layer)

    def workspace_bytes(self, layer: LayerSpec) -> int:
        g = ConvGeometry(layer)
        return aligned(4 * g.n * g.c * g.hp * g.wp) + 4 * g.n * g.c * g.kh * g.kw * g.oh * g.ow

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        g = ConvGeometry(layer)
        weight = layer.constants[1].reshape(g.group, g.mg, g.k).astype(np.float32, copy=False)
        bias = layer.constants[2].astype(np.float32, copy=False).reshape(1, g.m, 1, 1) if g.has_bias else None
        cols_offset = aligned(4 * g.n * g.c * g.hp * g.wp)

        def run(inputs: Sequence[Any], outputs: Sequence[Any], workspace: Any) -> None:
            padded = workspace_view(workspace, g.padded_shape)
            _pad_into(inputs[0], padded, g)
            cols = workspace_view(workspace, (g.n, g.c, g.kh, g.kw, g.oh, g.ow), cols_offset)
            for i in range(g.kh):
                for j in range(g.kw):
                    cols[:, :, i, j] = _tap(padded, g, i, j)
            out = outputs[0].reshape(g.n, g.group, g.mg, g.oh * g.ow)
            np.matmul(weight, cols.reshape(g.n, g.group, g.k, g.oh * g.ow), out=out)
            if bias is not None:
                np.add(outputs[0], bias, out=outputs[0])

        return run


class CpuTapAccumulate(Tactic):
    """Direct convolution: accumulate one (M x C) @ (C x OH*OW) product per kernel tap, taps in row-major order."""

    family, ops, name, backend, priority = "conv", ("Conv",), "cpu_tap_accumulate", "cpu", 20

    def unsupported(self, layer: LayerSpec) -> str | None:
        return unsupported_conv(layer)

    def workspace_bytes(self, layer: LayerSpec) -> int:
        g = ConvGeometry(layer)
        return aligned(4 * g.n * g.c * g.hp * g.wp) + 4 * g.n * g.c * g.oh * g.ow

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        g = ConvGeometry(layer)
        w = layer.constants[1].astype(np.float32, copy=False).reshape(g.group, g.mg, g.cg, g.kh, g.kw)
        taps = [np.ascontiguousarray(w[:, :, :, i, j]) for i in range(g.kh) for j in range(g.kw)]
        bias = layer.constants[2].astype(np.float32, copy=False).reshape(1, g.m, 1, 1) if g.has_bias else None
        tap_offset = aligned(4 * g.n * g.c * g.hp * g.wp)

        def run(inputs: Sequence[Any], outputs: Sequence[Any], workspace: Any) -> None:
            padded = workspace_view(workspace, g.padded_shape)
            _pad_into(inputs[0], padded, g)
            tap = workspace_view(workspace, (g.n, g.c, g.oh, g.ow), tap_offset)
            out = outputs[0].reshape(g.n, g.group, g.mg, g.oh * g.ow)
            out.fill(0.0)
            for t, (i, j) in enumerate((i, j) for i in range(g.kh) for j in range(g.kw)):
                tap[...] = _tap(padded, g, i, j)
                out += np.matmul(taps[t], tap.reshape(g.n, g.group, g.cg, g.oh * g.ow))
            if bias is not None:
                np.add(outputs[0], bias, out=outputs[0])

        return run


#: im2col tactics lay out the columns of as many images at once as fit in this many bytes (at least one image).
COLS_BUDGET_MIB = 64


def _images_per_chunk(g: ConvGeometry) -> int:
    per_image = 4 * g.c * g.kh * g.kw * g.oh * g.ow
    return max(1, min(g.n, (COLS_BUDGET_MIB << 20) // per_image))


def _tiled_images_per_chunk(g: ConvGeometry) -> int:
    """As many images as the budget allows, and few enough that images * groups fits gridDim.z."""
    return max(1, min(_images_per_chunk(g), MAX_GRID_YZ // g.group))


def _window_args(g: ConvGeometry) -> tuple[np.int32, ...]:
    return tuple(i32(v) for v in (g.pt, g.pl, g.sh, g.sw, g.dh, g.dw))


class _CudaConv(Tactic):
    """What the CUDA convolutions share: the weight as (G, Mg, K) on the device, and the bias kernel."""

    family, ops, backend = "conv", ("Conv",), "cuda"

    def unsupported(self, layer: LayerSpec) -> str | None:
        return unsupported_conv(layer)

    def upload(self, layer: LayerSpec, backend: Backend) -> tuple[ConvGeometry, Any, Any]:
        g = ConvGeometry(layer)
        weight = backend.asarray(layer.constants[1].astype(np.float32, copy=False).reshape(g.group, g.mg, g.k))
        bias = backend.asarray(layer.constants[2].astype(np.float32, copy=False)) if g.has_bias else None
        return g, weight, bias

    @staticmethod
    def bias_adder(backend: Backend, g: ConvGeometry, bias: Any) -> Any:
        """out += bias[channel] over the whole (N, M, OH, OW) output, or a no-op without a bias."""
        if bias is None:
            return lambda out: None
        fn = kernel(backend, "conv.cu", "add_channel_bias")
        plane, total = g.oh * g.ow, g.n * g.m * g.oh * g.ow

        def add(out: Any) -> None:
            launch_linear(backend, fn, total, (out, bias, i32(g.m), i64(plane), i64(total)))

        return add


class _CudaIm2col(_CudaConv):
    parameters = MappingProxyType({"cols_budget_mib": COLS_BUDGET_MIB})

    def images_per_chunk(self, g: ConvGeometry) -> int:
        return _images_per_chunk(g)

    def workspace_bytes(self, layer: LayerSpec) -> int:
        g = ConvGeometry(layer)
        return aligned(4 * self.images_per_chunk(g) * g.c * g.kh * g.kw * g.oh * g.ow)

    @staticmethod
    def im2col(backend: Backend, g: ConvGeometry) -> Any:
        """A function filling the columns of images [n0, n0 + count) into ``cols`` (count, C*KH*KW, OH*OW)."""
        fn = kernel(backend, "conv.cu", "im2col")
        sizes = tuple(i32(v) for v in (g.h, g.w, g.kh, g.kw, g.oh, g.ow))
        window = _window_args(g)

        def fill(x: Any, cols: Any, n0: int, count: int) -> None:
            total = count * g.c * g.kh * g.kw * g.oh * g.ow
            launch_linear(backend, fn, total, (x[n0:n0 + count], cols, *sizes, *window, i64(total)))

        return fill


class CudaIm2colCublas(_CudaIm2col):
    """im2col into the workspace, then one cuBLAS product per chunk of images: W(G, Mg, K) @ cols(n, G, K, OHW)."""

    name, priority, source, cuda_sources = "cuda_im2col_cublas", 10, "cublas", ("conv.cu",)

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        g, weight, bias = self.upload(layer, backend)
        if g.group == 1:
            weight = weight.reshape(g.m, g.k)
        fill, add_bias = self.im2col(backend, g), self.bias_adder(backend, g, bias)
        chunk, ohw, xp = self.images_per_chunk(g), g.oh * g.ow, backend.xp

        def run(inputs: Sequence[Any], outputs: Sequence[Any], workspace: Any) -> None:
            out = outputs[0]
            for n0 in range(0, g.n, chunk):
                count = min(chunk, g.n - n0)
                cols = workspace_view(workspace, (count, g.c * g.kh * g.kw, ohw))
                fill(inputs[0], cols, n0, count)
                dst = out[n0:n0 + count]
                with on_stream(backend):
                    if g.group == 1:
                        xp.matmul(weight, cols, out=dst.reshape(count, g.m, ohw))
                    else:
                        xp.matmul(weight, cols.reshape(count, g.group, g.k, ohw),
                                  out=dst.reshape(count, g.group, g.mg, ohw))
            add_bias(out)

        return run


class CudaIm2colTiled(_CudaIm2col):
    """im2col into the workspace, then the tiled SGEMM of gemm.cu over every (image, group), bias fused."""

    name, priority, source, cuda_sources = "cuda_im2col_tiled", 20, "nvrtc", ("conv.cu", "gemm.cu")
    parameters = MappingProxyType({**_CudaIm2col.parameters, **TiledGemmLaunch.PARAMETERS})

    def images_per_chunk(self, g: ConvGeometry) -> int:
        return _tiled_images_per_chunk(g)

    def unsupported(self, layer: LayerSpec) -> str | None:
        reason = unsupported_conv(layer)
        if reason is not None:
            return reason
        g = ConvGeometry(layer)
        return TiledGemmLaunch.unsupported(g.mg, self.images_per_chunk(g) * g.group)

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        g, weight, bias = self.upload(layer, backend)
        fill, chunk, ohw = self.im2col(backend, g), self.images_per_chunk(g), g.oh * g.ow
        # Product z = image * G + group of a chunk; offsets of W, cols, out and bias, relative to the chunk.
        z = np.arange(chunk * g.group, dtype=np.int64)
        group = z % g.group
        offsets = np.stack([group * g.mg * g.k, z * g.k * ohw, z * g.mg * ohw, group * g.mg], axis=1)
        gemm = TiledGemmLaunch(backend, g.mg, ohw, g.k, (g.k, 1), (ohw, 1), offsets, (1, 0),
                               has_c=g.has_bias)

        def run(inputs: Sequence[Any], outputs: Sequence[Any], workspace: Any) -> None:
            for n0 in range(0, g.n, chunk):
                count = min(chunk, g.n - n0)
                cols = workspace_view(workspace, (count, g.c * g.kh * g.kw, ohw))
                fill(inputs[0], cols, n0, count)
                gemm(weight, cols, outputs[0][n0:n0 + count], bias, batch=count * g.group)

        return run


class CudaDirect(_CudaConv):
    """One thread per output element, summing (channel, tap row, tap column) in that order; no workspace."""

    name, priority, source, cuda_sources = "cuda_direct", 30, "nvrtc", ("conv.cu",)

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        g, weight, bias = self.upload(layer, backend)
        fn = kernel(backend, "conv.cu", "conv_direct")
        total = g.n * g.m * g.oh * g.ow
        sizes = tuple(i32(v) for v in (g.c, g.h, g.w, g.m, g.cg, g.mg, g.kh, g.kw, g.oh, g.ow))
        tail = (*_window_args(g), i32(g.has_bias), i64(total))

        def run(inputs: Sequence[Any], outputs: Sequence[Any], workspace: Any) -> None:
            launch_linear(backend, fn, total, (inputs[0], weight, bias, outputs[0], *sizes, *tail))

        return run


class CudaPointwiseCublas(_CudaConv):
    """A 1x1 convolution is a product as it stands: W(G, Mg, Cg) @ X(n, G, Cg, H*W) by cuBLAS, then the bias."""

    name, priority, source, cuda_sources = "cuda_pointwise_cublas", 5, "cublas", ("conv.cu",)

    def unsupported(self, layer: LayerSpec) -> str | None:
        reason = unsupported_conv(layer)
        if reason is not None:
            return reason
        g = ConvGeometry(layer)
        if not g.is_pointwise:
            return (f"only 1x1 kernels with stride 1 and no padding; this layer has a {g.kh}x{g.kw} kernel, "
                    f"strides {[g.sh, g.sw]} and pads {[g.pt, g.pl, g.pb, g.pr]}")
        return None

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        g, weight, bias = self.upload(layer, backend)
        add_bias, xp, hw = self.bias_adder(backend, g, bias), backend.xp, g.h * g.w
        x_shape: tuple[int, ...] = (g.n, g.c, hw)
        out_shape: tuple[int, ...] = (g.n, g.m, hw)
        if g.group == 1:
            weight = weight.reshape(g.m, g.c)
        else:
            x_shape, out_shape = (g.n, g.group, g.cg, hw), (g.n, g.group, g.mg, hw)

        def run(inputs: Sequence[Any], outputs: Sequence[Any], workspace: Any) -> None:
            with on_stream(backend):
                xp.matmul(weight, inputs[0].reshape(x_shape), out=outputs[0].reshape(out_shape))
            add_bias(outputs[0])

        return run


TACTICS: tuple[Tactic, ...] = (
    CpuIm2colGemm(), CpuTapAccumulate(), CudaDirect(), CudaIm2colCublas(), CudaIm2colTiled(), CudaPointwiseCublas(),
)

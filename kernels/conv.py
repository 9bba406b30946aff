"""2-D convolution tactics (ONNX Conv: pads, strides, dilations, groups, optional bias).

CPU: im2col + one BLAS matmul per group; and a tap-by-tap accumulation (one small matmul per kernel tap, in a
fixed order). CUDA (``conv.cu``): im2col into the workspace, then cuBLAS or the tiled SGEMM of ``gemm.cu`` over
every (image, group); a direct convolution; cuBLAS alone for 1x1 convolutions; Winograd F(2x2, 3x3) with cuBLAS for
3x3 ones (float32); and (``conv_mma.cu``) implicit-GEMM tensor-core kernels, one per block shape (float16 and
bfloat16).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from reprobuild.core.dtypes import np_dtype
from reprobuild.kernels.backend import Backend, CudaBackend
from reprobuild.kernels.cuda_launch import cdiv, f32, i32, i64, kernel_launch, linear, plan
from reprobuild.kernels.gemm import ACTIVATIONS, TiledGemmLaunch, unsupported_epilogue
from reprobuild.kernels.launch import INT32_MAX, MAX_GRID_YZ, GemmLaunch, In, KernelLaunch, Out, Ref, Ws
from reprobuild.kernels.tactic import Kernel, LayerSpec, Tactic, aligned, workspace_view
from reprobuild.layers.op_fused_conv import epilogue as op_epilogue


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
        self.dtype = layer.inputs[0].dtype
        self.itemsize = np_dtype(self.dtype).itemsize

    @property
    def padded_shape(self) -> tuple[int, ...]:
        return (self.n, self.c, self.hp, self.wp)

    @property
    def is_pointwise(self) -> bool:
        return (self.kh, self.kw, self.sh, self.sw, self.pt, self.pl, self.pb, self.pr) == (1, 1, 1, 1, 0, 0, 0, 0)


def unsupported_conv(layer: LayerSpec) -> str | None:
    """What every hand-written convolution needs: a 2-D convolution with constant weights (and bias); a
    FusedConv's residual (input 3) arrives at run time."""
    if len(layer.inputs[0].shape) != 4:
        return f"only 2-D convolution (a rank-4 input); this one has rank {len(layer.inputs[0].shape)}"
    if any(i not in layer.constants for i in range(1, min(len(layer.inputs), 3))):
        return "the weight and bias must be constants (initializers); this layer reads them at run time"
    return None


def _pad_into(x: np.ndarray, padded: np.ndarray, g: ConvGeometry) -> None:
    padded.fill(0.0)
    padded[:, :, g.pt:g.pt + g.h, g.pl:g.pl + g.w] = x


def _tap(padded: np.ndarray, g: ConvGeometry, i: int, j: int) -> np.ndarray:
    """The input pixels kernel tap (i, j) meets at every output position: (N, C, OH, OW), a strided view."""
    r0, c0 = i * g.dh, j * g.dw
    return padded[:, :, r0:r0 + g.sh * (g.oh - 1) + 1:g.sh, c0:c0 + g.sw * (g.ow - 1) + 1:g.sw]


def cpu_epilogue(layer: LayerSpec, out: np.ndarray, inputs: Sequence[Any]) -> None:
    """A FusedConv's residual and activation, applied in place by the op's own ``epilogue`` (so the CPU tactics
    give the unfused layers' bits); nothing for a plain Conv."""
    if layer.op != "FusedConv":
        return
    y = op_epilogue(np, layer.attrs, out, inputs[1] if len(layer.inputs) > 3 else None)
    if y is not out:
        np.copyto(out, y)


class CpuIm2colGemm(Tactic):
    """im2col into the workspace, then one batched matmul over the groups. Version 2: ``cpu_epilogue`` imports the
    op's epilogue at module level (issue 21); the same numbers."""

    family, ops, name, backend, priority = "conv", ("Conv", "FusedConv"), "cpu_im2col_gemm", "cpu", 10
    # 2: the epilogue's ops are imported, not looked up; the import lifted (same results)
    version = 3  # 3: the epilogue's ops compute through the formula table (layers/formulas.py); the same bits

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
            cpu_epilogue(layer, outputs[0], inputs)

        return run


class CpuTapAccumulate(Tactic):
    """Direct convolution: accumulate one (M x C) @ (C x OH*OW) product per kernel tap, taps in row-major order.
    Version 2: ``cpu_epilogue`` imports the op's epilogue at module level (issue 21); the same numbers."""

    family, ops, name, backend, priority = "conv", ("Conv", "FusedConv"), "cpu_tap_accumulate", "cpu", 20
    # 2: the epilogue's ops are imported, not looked up; the import lifted (same results)
    version = 3  # 3: the epilogue's ops compute through the formula table (layers/formulas.py); the same bits

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
            cpu_epilogue(layer, outputs[0], inputs)

        return run


#: im2col tactics lay out the columns of as many images at once as fit in this many bytes (at least one image).
COLS_BUDGET_MIB = 64


def _images_per_chunk(g: ConvGeometry) -> int:
    per_image = g.itemsize * g.c * g.kh * g.kw * g.oh * g.ow
    return max(1, min(g.n, (COLS_BUDGET_MIB << 20) // per_image))


def _tiled_images_per_chunk(g: ConvGeometry) -> int:
    """As many images as the budget allows, and few enough that images * groups fits gridDim.z."""
    return max(1, min(_images_per_chunk(g), MAX_GRID_YZ // g.group))


def _window_args(g: ConvGeometry) -> tuple[np.int32, ...]:
    return tuple(i32(v) for v in (g.pt, g.pl, g.sh, g.sw, g.dh, g.dw))


class Epilogue:
    """What follows the product over the whole output: + bias[channel], + a residual input, an activation.
    One kernel (conv.cu ``conv_epilogue``), each step rounded as the unfused layers round it."""

    def __init__(self, layer: LayerSpec, g: ConvGeometry) -> None:
        self.activation = str(layer.attr("activation", ""))
        self.has_residual = layer.op == "FusedConv" and len(layer.inputs) > 3
        self.lo = float(layer.attr("activation_min", 0.0))
        self.hi = float(layer.attr("activation_max", 0.0))
        self.g = g

    @property
    def needed(self) -> bool:
        return self.g.has_bias or self.has_residual or bool(self.activation)

    def launch(self, backend: Backend, bias: Any, out: Any, residual: Any, images: int) -> KernelLaunch:
        g = self.g
        plane, total = g.oh * g.ow, images * g.m * g.oh * g.ow
        return linear(backend, "conv.cu", "conv_epilogue", total, (
            out, bias, residual, i32(g.m), i64(plane), i64(total), i32(ACTIVATIONS[self.activation]),
            f32(self.lo), f32(self.hi)), dtype=g.dtype)


class _CudaConv(Tactic):
    """What the CUDA convolutions share: the weight as (G, Mg, K) on the device in the layer's dtype (float32 or
    float16), the bias in float32, and the epilogue. Half layers accumulate in float32. Every CUDA convolution's
    version went up by one when epilogue.cuh came to be written from the formula table (``formulas.py``), whose
    Clip gives max where min > max, as ONNX and the reference do."""

    family, ops, backend = "conv", ("Conv", "FusedConv"), "cuda"
    version = 2
    dtypes: tuple[str, ...] = ("float32", "float16", "bfloat16")
    per_dtype_build = True
    capturable = True

    def unsupported(self, layer: LayerSpec) -> str | None:
        return unsupported_conv(layer) or unsupported_epilogue(layer)

    def upload(self, layer: LayerSpec, backend: Backend) -> tuple[ConvGeometry, Any, Any]:
        g = ConvGeometry(layer)
        weight = backend.asarray(layer.constants[1].astype(np_dtype(g.dtype), copy=False).reshape(g.group, g.mg, g.k))
        bias = backend.asarray(layer.constants[2].astype(np.float32, copy=False)) if g.has_bias else None
        return g, weight, bias

    @staticmethod
    def chunk_refs(g: ConvGeometry, epilogue: Epilogue, n0: int) -> tuple[Ref, Ref, Ref | None]:
        """Refs to the input, the output and the residual from image ``n0`` on."""
        out = Out(0, g.itemsize * n0 * g.m * g.oh * g.ow)
        residual = In(1, g.itemsize * n0 * g.m * g.oh * g.ow) if epilogue.has_residual else None
        return In(0, g.itemsize * n0 * g.c * g.h * g.w), out, residual


class _CudaIm2col(_CudaConv):
    parameters = MappingProxyType({"cols_budget_mib": COLS_BUDGET_MIB})

    def images_per_chunk(self, g: ConvGeometry) -> int:
        return _images_per_chunk(g)

    def workspace_bytes(self, layer: LayerSpec) -> int:
        g = ConvGeometry(layer)
        return aligned(g.itemsize * self.images_per_chunk(g) * g.c * g.kh * g.kw * g.oh * g.ow)

    @staticmethod
    def im2col(backend: Backend, g: ConvGeometry, x: Ref, count: int) -> KernelLaunch:
        """Fill the columns (count, C*KH*KW, OH*OW) of ``count`` images from ``x`` into the workspace."""
        total = count * g.c * g.kh * g.kw * g.oh * g.ow
        sizes = tuple(i32(v) for v in (g.h, g.w, g.kh, g.kw, g.oh, g.ow))
        return linear(backend, "conv.cu", "im2col", total, (x, Ws(0), *sizes, *_window_args(g), i64(total)),
                      dtype=g.dtype)

    def chunks(self, g: ConvGeometry) -> list[tuple[int, int]]:
        chunk = self.images_per_chunk(g)
        return [(n0, min(chunk, g.n - n0)) for n0 in range(0, g.n, chunk)]


#: The most groups the cuBLAS convolutions issue one GEMM each for; more (depthwise) is the direct kernel's.
MAX_GEMM_GROUPS = 8


def grouped_gemms(g: ConvGeometry, weight: Any, cols: Ref, out: Ref, count: int, ld_cols: int,
                  compute: str) -> list[GemmLaunch]:
    """For each group, out[n][g] (Mg x OHW) = W[g] (Mg x K) @ cols[n][g] (K x OHW) over ``count`` images, as
    one strided-batched GEMM in cuBLAS's column-major terms (out^T = cols^T @ W^T)."""
    ohw = g.oh * g.ow
    return [GemmLaunch(
        transa=False, transb=False, m=ohw, n=g.mg, k=g.k,
        a=cols.at(g.itemsize * grp * g.k * ohw), lda=ohw, stride_a=ld_cols,
        b=weight[grp], ldb=g.k, stride_b=0,
        c=out.at(g.itemsize * grp * g.mg * ohw), ldc=ohw, stride_c=g.m * ohw,
        batch=count, dtype=g.dtype, compute=compute) for grp in range(g.group)]


def unsupported_gemm_groups(layer: LayerSpec) -> str | None:
    g = ConvGeometry(layer)
    if g.group > MAX_GEMM_GROUPS:
        return (f"{g.group} groups would need {g.group} GEMMs per run; the direct kernel handles grouped and "
                "depthwise convolutions")
    return None


class CudaIm2colCublas(_CudaIm2col):
    """im2col into the workspace, then a cuBLAS strided-batched GEMM per group over the images of a chunk, then
    the epilogue. Version 2: cuBLAS through a handle with its own workspace (capturable), not ``cupy.matmul``."""

    name, priority, source = "cuda_im2col_cublas", 10, "cublas"
    cuda_kernels = MappingProxyType({"conv.cu": ("conv_epilogue", "im2col")})
    version = 3
    compute = "fp32"

    def unsupported(self, layer: LayerSpec) -> str | None:
        return super().unsupported(layer) or unsupported_gemm_groups(layer)

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        g, weight, bias = self.upload(layer, backend)
        epilogue, launches = Epilogue(layer, g), list[KernelLaunch | GemmLaunch]()
        for n0, count in self.chunks(g):
            x, out, residual = self.chunk_refs(g, epilogue, n0)
            launches.append(self.im2col(backend, g, x, count))
            launches += grouped_gemms(g, weight, Ws(0), out, count, g.c * g.kh * g.kw * g.oh * g.ow, self.compute)
            if epilogue.needed:
                launches.append(epilogue.launch(backend, bias, out, residual, count))
        return plan(backend, *launches, holds=(weight, bias))


class CudaIm2colCublasTf32(CudaIm2colCublas):
    """im2col + cuBLAS with TF32 tensor cores (float32 accumulation); allowed by ``--precision tf32``."""

    name, priority, math, compute = "cuda_im2col_cublas_tf32", 9, "tf32", "tf32"
    version = 2
    dtypes = ("float32",)


class CudaIm2colTiled(_CudaIm2col):
    """im2col into the workspace, then the tiled SGEMM of gemm.cu over every (image, group), bias fused."""

    name, priority, source = "cuda_im2col_tiled", 20, "nvrtc"
    cuda_kernels = MappingProxyType({"conv.cu": ("conv_epilogue", "im2col"), "gemm.cu": ("sgemm_tiled",)})
    dtypes = ("float32",)  # the tiled SGEMM is float32
    parameters = MappingProxyType({**_CudaIm2col.parameters, **TiledGemmLaunch.PARAMETERS})

    def images_per_chunk(self, g: ConvGeometry) -> int:
        return _tiled_images_per_chunk(g)

    def unsupported(self, layer: LayerSpec) -> str | None:
        reason = super().unsupported(layer)
        if reason is not None:
            return reason
        g = ConvGeometry(layer)
        return TiledGemmLaunch.unsupported(g.mg, self.images_per_chunk(g) * g.group)

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        g, weight, bias = self.upload(layer, backend)
        epilogue, chunk, ohw = Epilogue(layer, g), self.images_per_chunk(g), g.oh * g.ow
        # Product z = image * G + group of a chunk; offsets of W, cols, out and bias, relative to the chunk.
        z = np.arange(chunk * g.group, dtype=np.int64)
        group = z % g.group
        offsets = np.stack([group * g.mg * g.k, z * g.k * ohw, z * g.mg * ohw, group * g.mg], axis=1)
        # The bias rides in the GEMM's C operand unless an epilogue runs anyway (then it adds the bias there).
        fused_bias = g.has_bias and not (epilogue.has_residual or epilogue.activation)
        gemm = TiledGemmLaunch(backend, g.mg, ohw, g.k, (g.k, 1), (ohw, 1), offsets, (1, 0), has_c=fused_bias)
        launches = []
        for n0, count in self.chunks(g):
            x, out, residual = self.chunk_refs(g, epilogue, n0)
            launches.append(self.im2col(backend, g, x, count))
            launches.append(gemm.launch(weight, Ws(0), out, bias if fused_bias else None, batch=count * g.group))
            if epilogue.needed and not fused_bias:
                launches.append(epilogue.launch(backend, bias, out, residual, count))
        return plan(backend, *launches, holds=(weight, bias, gemm.offsets))


class CudaDirect(_CudaConv):
    """One thread per output element, summing (channel, tap row, tap column) in that order; no workspace. For a
    depthwise convolution (one channel a group) that is the whole kernel window per thread."""

    name, priority, source = "cuda_direct", 30, "nvrtc"
    cuda_kernels = MappingProxyType({"conv.cu": ("conv_direct", "conv_epilogue")})

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        g, weight, bias = self.upload(layer, backend)
        epilogue = Epilogue(layer, g)
        total = g.n * g.m * g.oh * g.ow
        sizes = tuple(i32(v) for v in (g.c, g.h, g.w, g.m, g.cg, g.mg, g.kh, g.kw, g.oh, g.ow))
        # The direct kernel adds the bias itself when nothing else follows; otherwise the epilogue does.
        own_bias = g.has_bias and not (epilogue.has_residual or epilogue.activation)
        launches = [linear(backend, "conv.cu", "conv_direct", total, (
            In(0), weight, bias, Out(0), *sizes, *_window_args(g), i32(own_bias), i64(total)), dtype=g.dtype)]
        if epilogue.needed and not own_bias:
            _, out, residual = self.chunk_refs(g, epilogue, 0)
            launches.append(epilogue.launch(backend, bias, out, residual, g.n))
        return plan(backend, *launches, holds=(weight, bias))


class CudaPointwiseCublas(_CudaConv):
    """A 1x1 convolution is a product as it stands: per group, out[n] = W[g] @ X[n][g] by one cuBLAS
    strided-batched GEMM over the images, then the epilogue. Version 2: a capturable cuBLAS handle."""

    name, priority, source = "cuda_pointwise_cublas", 5, "cublas"
    cuda_kernels = MappingProxyType({"conv.cu": ("conv_epilogue",)})
    version = 3
    compute = "fp32"

    def unsupported(self, layer: LayerSpec) -> str | None:
        reason = super().unsupported(layer) or unsupported_gemm_groups(layer)
        if reason is not None:
            return reason
        g = ConvGeometry(layer)
        if not g.is_pointwise:
            return (f"only 1x1 kernels with stride 1 and no padding; this layer has a {g.kh}x{g.kw} kernel, "
                    f"strides {[g.sh, g.sw]} and pads {[g.pt, g.pl, g.pb, g.pr]}")
        return None

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        g, weight, bias = self.upload(layer, backend)
        epilogue = Epilogue(layer, g)
        x, out, residual = self.chunk_refs(g, epilogue, 0)
        launches: list[Any] = grouped_gemms(g, weight, x, out, g.n, g.c * g.h * g.w, self.compute)
        if epilogue.needed:
            launches.append(epilogue.launch(backend, bias, out, residual, g.n))
        return plan(backend, *launches, holds=(weight, bias))


class CudaPointwiseCublasTf32(CudaPointwiseCublas):
    """A 1x1 convolution by cuBLAS with TF32 tensor cores; allowed by ``--precision tf32``."""

    name, priority, math, compute = "cuda_pointwise_cublas_tf32", 4, "tf32", "tf32"
    version = 2
    dtypes = ("float32",)


#: Winograd F(2x2, 3x3)'s transforms (Lavin and Gray, 2016): U = G g G^T for a 3x3 kernel g, V = B^T d B for a
#: 4x4 input patch d (conv.cu), Y = A^T (U .* V) A for the 2x2 outputs.
WINOGRAD_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
#: The transformed input and the 16 products of as many images at once as fit in this many bytes (at least one).
WINOGRAD_BUDGET_MIB = 128


def winograd_weight(weight: np.ndarray) -> np.ndarray:
    """The (M, C, 3, 3) weight as U (16, M, C): G g G^T of every (output, input) channel pair, computed in float64
    and rounded once to float32; U[4 * i + j] is element (i, j) of the 4x4 transform."""
    u = np.einsum("ia,mcab,jb->ijmc", WINOGRAD_G, weight.astype(np.float64), WINOGRAD_G)
    return np.ascontiguousarray(u.reshape(16, *weight.shape[:2]).astype(np.float32))


class CudaWinogradCublas(_CudaConv):
    """Winograd F(2x2, 3x3) for 3x3 convolutions of stride 1 (conv.cu): transform the input tiles into the
    workspace, one cuBLAS strided-batched GEMM over the 16 transformed products (2.25 times fewer multiplications
    than the direct product), then transform back with the bias, residual and activation. float32 only: the
    transforms' extra roundings are small in float32, not in half."""

    name, priority, source = "cuda_winograd_cublas", 12, "cublas"
    cuda_kernels = MappingProxyType({"conv.cu": ("winograd_input", "winograd_output")})
    dtypes = ("float32",)
    compute = "fp32"
    parameters = MappingProxyType({"tile": "F(2x2,3x3)", "workspace_budget_mib": WINOGRAD_BUDGET_MIB})

    def unsupported(self, layer: LayerSpec) -> str | None:
        reason = super().unsupported(layer)
        if reason is not None:
            return reason
        g = ConvGeometry(layer)
        if (g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.group) != (3, 3, 1, 1, 1, 1, 1):
            return (f"Winograd F(2x2, 3x3) runs ungrouped 3x3 kernels of stride 1 and dilation 1; this layer has a "
                    f"{g.kh}x{g.kw} kernel, strides {[g.sh, g.sw]}, dilations {[g.dh, g.dw]}, {g.group} group(s)")
        return None

    @staticmethod
    def tiles(g: ConvGeometry) -> tuple[int, int]:
        return cdiv(g.oh, 2), cdiv(g.ow, 2)

    def images_per_chunk(self, g: ConvGeometry) -> int:
        th, tw = self.tiles(g)
        per_image = 4 * 16 * (g.c + g.m) * th * tw
        return max(1, min(g.n, (WINOGRAD_BUDGET_MIB << 20) // per_image))

    def workspace_layout(self, g: ConvGeometry) -> tuple[int, int]:
        """Where the 16 products start in the workspace (after the transformed input of a chunk), and its size."""
        th, tw = self.tiles(g)
        tiles = self.images_per_chunk(g) * th * tw
        products = aligned(4 * 16 * g.c * tiles)
        return products, products + 4 * 16 * g.m * tiles

    def workspace_bytes(self, layer: LayerSpec) -> int:
        return self.workspace_layout(ConvGeometry(layer))[1]

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        g = ConvGeometry(layer)
        u = backend.asarray(winograd_weight(layer.constants[1]))
        bias = backend.asarray(layer.constants[2].astype(np.float32, copy=False)) if g.has_bias else None
        epilogue = Epilogue(layer, g)
        th, tw = self.tiles(g)
        chunk = self.images_per_chunk(g)
        m_offset = self.workspace_layout(g)[0]
        launches: list[KernelLaunch | GemmLaunch] = []
        for n0 in range(0, g.n, chunk):
            count = min(chunk, g.n - n0)
            tiles = count * th * tw
            x, out, residual = self.chunk_refs(g, epilogue, n0)
            total_in, total_out = count * g.c * th * tw, count * g.m * th * tw
            launches.append(linear(backend, "conv.cu", "winograd_input", total_in, (
                x, Ws(0), *(i32(v) for v in (g.c, g.h, g.w, th, tw, g.pt, g.pl)), i64(tiles), i64(total_in))))
            # product xi: M (M x tiles) = U[xi] (M x C) @ V[xi] (C x tiles), as (tiles x M) = V^T U^T column-major
            launches.append(GemmLaunch(
                transa=False, transb=False, m=tiles, n=g.m, k=g.c, a=Ws(0), lda=tiles, stride_a=g.c * tiles,
                b=u, ldb=g.c, stride_b=g.m * g.c, c=Ws(m_offset), ldc=tiles, stride_c=g.m * tiles, batch=16,
                dtype="float32", compute=self.compute))
            launches.append(linear(backend, "conv.cu", "winograd_output", total_out, (
                Ws(m_offset), bias, residual, out, *(i32(v) for v in (g.m, g.oh, g.ow, th, tw)), i64(tiles),
                i64(total_out), i32(ACTIVATIONS[epilogue.activation]), f32(epilogue.lo), f32(epilogue.hi))))
        return plan(backend, *launches, holds=(u, bias))


class CudaWinogradCublasTf32(CudaWinogradCublas):
    """Winograd F(2x2, 3x3) with the 16 products on TF32 tensor cores; allowed by ``--precision tf32``."""

    name, priority, math, compute = "cuda_winograd_cublas_tf32", 11, "tf32", "tf32"


class _CudaImplicitGemmMma(_CudaConv):
    """Implicit-GEMM convolution on tensor cores (conv_mma.cu): the weight as (M, K) rows zero-padded to a multiple
    of 32, the input gathered straight from NCHW into shared memory (no im2col, no workspace), mma.sync m16n8k16
    with float32 accumulation, and the bias, residual and activation in the same kernel. float16 and bfloat16,
    ungrouped convolutions; one tactic per block shape (``block_m`` output channels x ``block_n`` output
    positions, ``warps_m`` x ``warps_n`` warps), so the builder times the shapes against each other and cuBLAS."""

    family, ops, backend, source = "conv", ("Conv", "FusedConv"), "cuda", "nvrtc"
    dtypes = ("float16", "bfloat16")
    min_compute_capability = 80
    BK = 32
    BM, BN, WM, WN = 0, 0, 0, 0  # set by each block shape below

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.parameters = _mma_parameters(cls.BM, cls.BN, cls.WM, cls.WN)
        cls.cuda_kernels = MappingProxyType({"conv_mma.cu": (cls.kernel_name(),)})

    @classmethod
    def kernel_name(cls) -> str:
        """The kernel of this block shape (conv_mma.cu's ``CONV_MMA(BM, BN, WM, WN)``)."""
        return f"conv_mma_{cls.BM}x{cls.BN}"

    def unsupported(self, layer: LayerSpec) -> str | None:
        reason = super().unsupported(layer)
        if reason is not None:
            return reason
        g = ConvGeometry(layer)
        if g.group != 1:
            return f"{g.group} groups; the implicit GEMM runs ungrouped convolutions (the direct kernel runs these)"
        if g.c * g.h * g.w > INT32_MAX or g.k + self.BK > INT32_MAX:
            return f"an image of {g.c * g.h * g.w} input elements; the kernel indexes one image with 32-bit ints"
        if cdiv(g.m, self.BM) > MAX_GRID_YZ:
            return f"{g.m} output channels need more than {MAX_GRID_YZ} blocks of {self.BM}"
        return None

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        g = ConvGeometry(layer)
        if not isinstance(backend, CudaBackend):
            raise TypeError(f"{self.label} needs the cuda backend, not {backend.name}")
        kp = cdiv(g.k, self.BK) * self.BK
        weight = np.zeros((g.m, kp), dtype=np_dtype(g.dtype))
        weight[:, :g.k] = layer.constants[1].astype(np_dtype(g.dtype), copy=False).reshape(g.m, g.k)
        c, i, j = np.unravel_index(np.arange(g.k), (g.c, g.kh, g.kw))
        table = np.zeros((kp, 4), dtype=np.int32)
        table[:, 1] = NO_ROW
        table[:g.k, 0] = c * g.h * g.w + i * g.dh * g.w + j * g.dw
        table[:g.k, 1] = i * g.dh
        table[:g.k, 2] = j * g.dw
        weight_d, table_d = backend.asarray(weight), backend.asarray(table)
        bias = backend.asarray(layer.constants[2].astype(np.float32, copy=False)) if g.has_bias else None
        epilogue = Epilogue(layer, g)
        _, out, residual = self.chunk_refs(g, epilogue, 0)
        npq = g.n * g.oh * g.ow
        grid = (cdiv(npq, self.BN), cdiv(g.m, self.BM), 1)
        sizes = tuple(i32(v) for v in (g.c, g.h, g.w, g.m, kp, g.oh, g.ow, g.pt, g.pl, g.sh, g.sw))
        launch = kernel_launch(backend, "conv_mma.cu", self.kernel_name(), grid,
                               (self.WM * self.WN * 32, 1, 1),
                               (In(0), weight_d, table_d, bias, residual, out, *sizes, i64(npq),
                                i32(ACTIVATIONS[epilogue.activation]), f32(epilogue.lo), f32(epilogue.hi)),
                               dtype=g.dtype)
        return plan(backend, launch, holds=(weight_d, table_d, bias))


#: ktab's row offset for the padding rows (k >= K): no input row is this far, so they read zeros (conv_mma.cu).
NO_ROW = 1 << 29


def _mma_parameters(bm: int, bn: int, wm: int, wn: int) -> MappingProxyType[str, int | str]:
    return MappingProxyType({"block_m": bm, "block_n": bn, "block_k": _CudaImplicitGemmMma.BK, "warps_m": wm,
                             "warps_n": wn, "instruction": "mma.sync.m16n8k16"})


class CudaImplicitGemmMma128x128(_CudaImplicitGemmMma):
    name, priority, BM, BN, WM, WN = "cuda_implicit_gemm_mma_128x128", 6, 128, 128, 2, 4


class CudaImplicitGemmMma128x64(_CudaImplicitGemmMma):
    name, priority, BM, BN, WM, WN = "cuda_implicit_gemm_mma_128x64", 7, 128, 64, 2, 2


class CudaImplicitGemmMma64x128(_CudaImplicitGemmMma):
    name, priority, BM, BN, WM, WN = "cuda_implicit_gemm_mma_64x128", 7, 64, 128, 2, 2


class CudaImplicitGemmMma64x64(_CudaImplicitGemmMma):
    name, priority, BM, BN, WM, WN = "cuda_implicit_gemm_mma_64x64", 8, 64, 64, 2, 2


TACTICS: tuple[Tactic, ...] = (
    CpuIm2colGemm(), CpuTapAccumulate(), CudaDirect(), CudaIm2colCublas(), CudaIm2colCublasTf32(), CudaIm2colTiled(),
    CudaPointwiseCublas(), CudaPointwiseCublasTf32(), CudaWinogradCublas(), CudaWinogradCublasTf32(),
    CudaImplicitGemmMma128x128(), CudaImplicitGemmMma128x64(),
    CudaImplicitGemmMma64x128(), CudaImplicitGemmMma64x64(),
)

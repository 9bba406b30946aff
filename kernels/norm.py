"""LayerNormalization (one output, float32 or float16, scale and bias constants over the normalized dimensions) and
RMSNormalization (a scale over them). CUDA tactics compile ``norm.cu``; the CPU runs the op's reference."""

from __future__ import annotations

from types import MappingProxyType

import numpy as np

from reprobuild.kernels.backend import Backend
from reprobuild.kernels.cuda_launch import f32, i32, i64, per_row, plan
from reprobuild.kernels.launch import In, Out
from reprobuild.kernels.tactic import Kernel, LayerSpec, Tactic


def _normalized(layer: LayerSpec) -> tuple[int, int]:
    """(rows, length): the input as rows of the dimensions from ``axis`` on."""
    shape, axis = layer.inputs[0].shape, int(layer.attr("axis"))
    return int(np.prod(shape[:axis], dtype=np.int64)), int(np.prod(shape[axis:], dtype=np.int64))


class CudaLayerNorm(Tactic):
    """One block per row: mean and variance each by a fixed tree, in float32 (stash_type 1). Version 2: the tree is
    reduce.cuh's (the same order and sums)."""

    family, ops, name, backend, priority = "norm", ("LayerNormalization",), "cuda_rowwise", "cuda", 10
    version = 2
    source, capturable = "nvrtc", True
    cuda_kernels = MappingProxyType({"norm.cu": ("layernorm_rows",)})
    dtypes = ("float32", "float16", "bfloat16")
    per_dtype_build = True

    def unsupported(self, layer: LayerSpec) -> str | None:
        if len(layer.outputs) != 1:
            return "only the normalized output; Mean and InvStdDev are left to the reference tactic"
        if int(layer.attr("stash_type", 1)) != 1:
            return "only stash_type 1 (float32 statistics)"
        if any(i not in layer.constants for i in range(1, len(layer.inputs))):
            return "scale and bias must be constants (initializers)"
        return None

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        rows, length = _normalized(layer)
        trailing = layer.inputs[0].shape[int(layer.attr("axis")):]
        params = [backend.asarray(np.ascontiguousarray(np.broadcast_to(
            layer.constants[i].astype(np.float32), trailing)).reshape(-1)) for i in range(1, len(layer.inputs))]
        bias = params[1] if len(params) > 1 else None
        return plan(backend, per_row(backend, "norm.cu", "layernorm_rows", rows, (
            In(0), params[0], bias, Out(0), i64(rows), i32(length, "the normalized length"),
            f32(float(layer.attr("epsilon")))), dtype=self.kernel_dtype(layer)), holds=(*params,))


def _row_param(layer: LayerSpec, index: int) -> str | None:
    """Why constant input ``index`` cannot be given to a row kernel as one value per normalized element (it must
    vary over the normalized dimensions only); None when it can."""
    shape, trailing = layer.constants[index].shape, layer.inputs[0].shape[int(layer.attr("axis")):]
    lead = len(shape) - len(trailing)
    if lead > 0 and any(n != 1 for n in shape[:lead]):
        return f"input {index} of shape {list(shape)} varies over dimensions before the normalized ones"
    return None


class CudaRmsNorm(Tactic):
    """RMSNormalization, one block per row: the mean of squares by reduce.cuh's fixed tree, in float32
    (stash_type 1), then x / sqrt(mean_square + epsilon) * scale as the reference computes it. A constant scale
    may broadcast over the normalized dimensions; one that arrives at run time must have their shape."""

    family, ops, name, backend, priority = "norm", ("RMSNormalization",), "cuda_rms_rowwise", "cuda", 10
    source, capturable = "nvrtc", True
    cuda_kernels = MappingProxyType({"norm.cu": ("rmsnorm_rows", "rmsnorm_rows_input_scale")})
    dtypes = ("float32", "float16", "bfloat16")
    per_dtype_build = True

    def unsupported(self, layer: LayerSpec) -> str | None:
        if int(layer.attr("stash_type", 1)) != 1:
            return "only stash_type 1 (float32 statistics)"
        if 1 not in layer.constants:
            shape, trailing = layer.inputs[1].shape, layer.inputs[0].shape[int(layer.attr("axis")):]
            if tuple(n for n in shape[:max(0, len(shape) - len(trailing))] if n != 1) or \
                    tuple(shape[max(0, len(shape) - len(trailing)):]) != tuple(trailing):
                return (f"a run-time scale of shape {list(shape)}; one that arrives at run time must have the "
                        f"normalized shape {list(trailing)} (a constant may broadcast)")
            return None
        return _row_param(layer, 1)

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        rows, length = _normalized(layer)
        trailing = layer.inputs[0].shape[int(layer.attr("axis")):]
        if 1 not in layer.constants:
            return plan(backend, per_row(backend, "norm.cu", "rmsnorm_rows_input_scale", rows, (
                In(0), In(1), Out(0), i64(rows), i32(length, "the normalized length"),
                f32(float(layer.attr("epsilon")))), dtype=self.kernel_dtype(layer)))
        scale = layer.constants[1].astype(np.float32)
        scale = scale.reshape(scale.shape[max(0, scale.ndim - len(trailing)):])
        scale_device = backend.asarray(np.ascontiguousarray(np.broadcast_to(scale, trailing)).reshape(-1))
        return plan(backend, per_row(backend, "norm.cu", "rmsnorm_rows", rows, (
            In(0), scale_device, Out(0), i64(rows), i32(length, "the normalized length"),
            f32(float(layer.attr("epsilon")))), dtype=self.kernel_dtype(layer)), holds=(scale_device,))


TACTICS: tuple[Tactic, ...] = (CudaLayerNorm(), CudaRmsNorm())

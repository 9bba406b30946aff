"""BatchNormalization in inference mode, as a per-channel affine map y = x * s + t.

s = scale / sqrt(var + epsilon) and t = bias - mean * s are computed once, in float64, when the tactic is
prepared. CUDA tactics compile ``batchnorm.cu``.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from reprobuild.kernels.backend import Backend
from reprobuild.kernels.cuda_launch import i32, i64, linear, plan
from reprobuild.kernels.launch import In, Out
from reprobuild.kernels.tactic import Kernel, LayerSpec, Tactic


def affine_parameters(layer: LayerSpec) -> tuple[np.ndarray, np.ndarray]:
    scale, bias, mean, var = (layer.constants[i].astype(np.float64) for i in range(1, 5))
    s = scale / np.sqrt(var + float(layer.attr("epsilon")))
    return s.astype(np.float32), (bias - mean * s).astype(np.float32)


def unsupported_batchnorm(layer: LayerSpec) -> str | None:
    if any(i not in layer.constants for i in range(1, 5)) or layer.constants.keys() - {1, 2, 3, 4}:
        return "scale, bias, mean and variance must be constants (initializers)"
    return None


class CpuBatchNorm(Tactic):
    family, ops, name, backend, priority = "batchnorm", ("BatchNormalization",), "cpu_affine", "cpu", 10

    def unsupported(self, layer: LayerSpec) -> str | None:
        return unsupported_batchnorm(layer)

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        s, t = affine_parameters(layer)
        rank = len(layer.inputs[0].shape)
        shape = (1, -1) + (1,) * (rank - 2)
        s, t = s.reshape(shape), t.reshape(shape)

        def run(inputs: Sequence[Any], outputs: Sequence[Any], workspace: Any) -> None:
            np.multiply(inputs[0], s, out=outputs[0])
            np.add(outputs[0], t, out=outputs[0])

        return run


class CudaAffine(Tactic):
    """y = x * s[c] + t[c], product and sum rounded separately as on the CPU."""

    family, ops, name, backend, priority = "batchnorm", ("BatchNormalization",), "cuda_affine", "cuda", 10
    capturable = True
    source = "nvrtc"
    cuda_kernels = MappingProxyType({"batchnorm.cu": ("channel_affine",)})

    def unsupported(self, layer: LayerSpec) -> str | None:
        return unsupported_batchnorm(layer)

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        s, t = (backend.asarray(v) for v in affine_parameters(layer))
        shape = layer.inputs[0].shape
        channels, plane = shape[1], int(np.prod(shape[2:], dtype=np.int64))
        total = int(np.prod(shape, dtype=np.int64))
        return plan(backend, linear(backend, "batchnorm.cu", "channel_affine", total,
                                    (In(0), Out(0), s, t, i32(channels), i64(plane), i64(total))), holds=(s, t))


TACTICS: tuple[Tactic, ...] = (CpuBatchNorm(), CudaAffine())

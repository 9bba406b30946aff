"""The tactic families, listed explicitly and in sorted order: the registry never depends on import order."""

from __future__ import annotations

from reprobuild.kernels import batchnorm, conv, elementwise, fused_elementwise, gemm, norm, pool, shape, softmax

FAMILIES = (batchnorm, conv, elementwise, fused_elementwise, gemm, norm, pool, shape, softmax)

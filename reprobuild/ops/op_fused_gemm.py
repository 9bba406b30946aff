"""The ONNX half of :mod:`reprobuild.layers.op_fused_gemm` (whose docstring says what the layers compute): the ONNX
versions each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from reprobuild.layers import op_fused_gemm as layer
from reprobuild.ops.base import OpDef
from reprobuild.ops.op_fused_conv import EPILOGUE_ATTRIBUTES


class FusedGemm(OpDef, layer.FusedGemm):
    versions, internal = (1,), True
    attributes = EPILOGUE_ATTRIBUTES


OPS = (FusedGemm(),)

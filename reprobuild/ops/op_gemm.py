"""The ONNX half of :mod:`reprobuild.layers.op_gemm` (whose docstring says what the layers compute): the ONNX versions
each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from typing import Any

from reprobuild.layers import op_gemm as layer
from reprobuild.ops.base import Node, OpDef


class Gemm(OpDef, layer.Gemm):
    versions = (7, 9, 11, 13)

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        return {"alpha": float(attrs["alpha"]), "beta": float(attrs["beta"]), "transA": int(attrs["transA"]),
                "transB": int(attrs["transB"])}


class MatMul(OpDef, layer.MatMul):
    versions = (1, 9, 13)


OPS = (Gemm(), MatMul())

"""The ONNX half of :mod:`reprobuild.layers.op_quant` (whose docstring says what the layers compute): the ONNX versions
each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from reprobuild.ops._quant_integer import ConvInteger, MatMulInteger, QLinearConv, QLinearMatMul
from reprobuild.ops._quant_linear import DequantizeLinear, DynamicQuantizeLinear, QuantizeLinear

OPS = (ConvInteger(), DequantizeLinear(), DynamicQuantizeLinear(), MatMulInteger(), QLinearConv(), QLinearMatMul(),
       QuantizeLinear())

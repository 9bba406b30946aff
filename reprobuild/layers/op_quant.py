"""Quantization: QuantizeLinear, DequantizeLinear and DynamicQuantizeLinear (``_quant_linear``), and the
integer products MatMulInteger, ConvInteger, QLinearMatMul and QLinearConv (``_quant_integer``).

These are integer ops, so their results must match bit for bit: rounding is half to even, saturation explicit,
integer products exact in int32, and every float step happens in a stated precision (``_quant_common``).
"""

from __future__ import annotations

from reprobuild.layers._quant_integer import ConvInteger, MatMulInteger, QLinearConv, QLinearMatMul
from reprobuild.layers._quant_linear import DequantizeLinear, DynamicQuantizeLinear, QuantizeLinear

LAYERS = (ConvInteger(), DequantizeLinear(), DynamicQuantizeLinear(), MatMulInteger(), QLinearConv(), QLinearMatMul(),
          QuantizeLinear())

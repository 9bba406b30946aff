"""QuantizeLinear, DequantizeLinear and DynamicQuantizeLinear: ``y = saturate(round(x / scale) + zero_point)``
and ``y = (x - zero_point) * scale``, per tensor, per axis or blocked.

Canonical attributes: ``axis`` and ``block_size`` (0 and 0 per tensor, ``block_size`` 0 per axis), the output
dtype as a name (``output_dtype``), and for QuantizeLinear ``saturate`` and ``precision`` (the dtype the
division runs in). Scale and zero point stay inputs (their shapes, known at build time, decide the
granularity).

ONNX subtleties, and what reprobuild does:

- rounding is to nearest, ties to even, in the division's precision: the ``precision`` attribute, else the
  scale's type; an int32 input is divided in float64 (the reference's NumPy promotion: every int32 is exact
  there). An input whose float type differs from the scale's without ``precision`` is refused: the spec (the
  scale's type) and the reference (the wider type) disagree;
- integer results saturate (+-inf to the range's ends); NaN gives the range's minimum, as in onnxruntime;
- float8 results are clipped to the finite range with ``saturate=1``; float4 always saturates;
- a zero point of a float type (float8, float4) is applied by the spec's formula; it is 0 in practice, and a
  zero zero point leaves the result bit for bit as the reference's (-0 included);
- DequantizeLinear computes in float32 (float64 for int32 with a zero point) and rounds once to the output type;
- a float8e8m0 scale (a power of two) is read as float32: QuantizeLinear divides in float32 then (exact, as the
  reference's NumPy promotion does), and DequantizeLinear needs ``output_dtype``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reprobuild.core.dtypes import FLOATS
from reprobuild.layers._attention_round import rounder, work_dtype
from reprobuild.layers._quant_common import (
    FLOAT8,
    INT_RANGES,
    QUANT_TYPES,
    check_params,
    expand,
    granularity,
    saturate_int,
    to_dtype,
    to_float8,
)
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType

_X_TYPES = ("float32", "float16", "bfloat16", "int32")


class QuantizeLinear(LayerDef):
    op = "QuantizeLinear"
    version = 2
    num_inputs = (2, 3)
    dtypes = _X_TYPES

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        x, scale = inputs[0], inputs[1]
        zero = inputs[2] if len(inputs) > 2 else None
        check_params(scale, zero)
        out = str(attrs["output_dtype"])
        if out not in QUANT_TYPES or (zero is not None and zero.dtype != out):
            raise OpError(f"the output dtype {out} must be one of {', '.join(QUANT_TYPES)} and the zero point's")
        if attrs["precision"] not in FLOATS or attrs["saturate"] not in (0, 1):
            raise OpError(f"precision {attrs['precision']!r} is not a float type, or saturate "
                          f"{attrs['saturate']!r} is not 0 or 1")
        _check_granularity(attrs, x, scale)
        return [TensorType(x.shape, out)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x, scale = inputs[0], inputs[1]
        axis, block = int(attrs["axis"]), int(attrs["block_size"])
        out, precision = str(attrs["output_dtype"]), str(attrs["precision"])
        work, rnd = work_dtype(precision), rounder(xp, precision)
        s = rnd(expand(xp, scale, x.shape, axis, block).astype(work))
        q = rnd(rnd(x.astype(work)) / s)
        zero = expand(xp, inputs[2], x.shape, axis, block) if len(inputs) > 2 else None
        if out in INT_RANGES:
            r = xp.rint(q).astype(xp.float64)
            if zero is not None:
                r = r + zero.astype(xp.float64)
            return [saturate_int(xp, r, out)]
        v = q
        if zero is not None:
            z = zero.astype(q.dtype)
            v = xp.where(z == 0, v, v + z)  # keeps -0 when the zero point is 0
        if out in FLOAT8:
            return [to_float8(v, out, bool(attrs["saturate"]))]
        return [to_dtype(xp, v, out)]  # float4: ml_dtypes saturates


class DequantizeLinear(LayerDef):
    op = "DequantizeLinear"
    version = 2
    num_inputs = (2, 3)
    dtypes = (*QUANT_TYPES, "int32")
    same_type = (2,)

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        x, scale = inputs[0], inputs[1]
        check_params(scale, inputs[2] if len(inputs) > 2 else None)
        _check_granularity(attrs, x, scale)
        return [TensorType(x.shape, str(attrs["output_dtype"]))]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x, scale = inputs[0], inputs[1]
        axis, block = int(attrs["axis"]), int(attrs["block_size"])
        work = xp.float64 if str(x.dtype) == "int32" and len(inputs) > 2 else xp.float32
        dx = x.astype(work)
        if len(inputs) > 2:
            dx = dx - expand(xp, inputs[2], x.shape, axis, block).astype(work)
        y = dx * expand(xp, scale, x.shape, axis, block).astype(work)
        return [to_dtype(xp, y, str(attrs["output_dtype"]))]


class DynamicQuantizeLinear(LayerDef):
    """uint8 quantization with a scale and zero point from the input's range (widened to include 0), all three
    computed on the device, as the reference computes them in float32; NaN quantizes to 0, as in QuantizeLinear."""

    op = "DynamicQuantizeLinear"
    num_outputs = (3, 3)
    dtypes = ("float32",)

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        if inputs[0].size == 0:
            raise OpError("the input is empty, so it has no range to quantize")
        return [TensorType(inputs[0].shape, "uint8"), TensorType((), "float32"), TensorType((), "uint8")]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x = inputs[0]
        f32 = xp.float32
        top = xp.maximum(f32(0), xp.max(x))
        bottom = xp.minimum(f32(0), xp.min(x))
        span = xp.where(top == bottom, f32(1), top - bottom)
        scale = (span / f32(255)).astype(f32)
        zero = xp.rint(xp.clip(f32(0) - bottom / scale, f32(0), f32(255)))
        y = saturate_int(xp, (xp.rint(x / scale) + zero).astype(xp.float64), "uint8")
        return [y, scale.reshape(()), saturate_int(xp, zero.astype(xp.float64), "uint8").reshape(())]


def _check_granularity(attrs: Attrs, x: TensorType, scale: TensorType) -> None:
    axis, block = int(attrs["axis"]), int(attrs["block_size"])
    if (axis, block) != (0, 0) or scale.size != 1:
        resolved = granularity(x, scale, axis, block)
        if resolved != (axis, block):
            raise OpError(f"the scale {list(scale.shape)} does not fit axis={axis}, block_size={block}")

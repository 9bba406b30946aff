"""Pow: base ** exponent, elementwise with numpy broadcasting. The output has the base's dtype.

ONNX subtleties:

- Since Pow-12 the exponent may have another type than the base (any integer or float type); Pow-7 has one
  type for both. The base may be a float or an integer (int32 and int64 in the schemas; every integer type
  works the same way here).
- Float base: float16/bfloat16/float32 with a float16/bfloat16/float32 exponent are computed in float32 (C's
  ``powf``, as onnxruntime does); a float64 operand or an integer exponent makes it float64 (onnxruntime's
  ``std::pow(float, int64_t)`` is the double ``pow`` too), rounded once to the base's type. Integer exponents
  beyond 2**53 keep their parity: the sign of a negative base comes from the integer, not from its rounding.
- Integer base: an integral exponent (of any type) gives the exact power, wrapping around in the base's type
  like any integer product; a negative one gives trunc(1 / base**n): 1 for base 1, ±1 for base -1, 0 for
  |base| >= 2, and the type's maximum for base 0 (1 / 0 is +inf, saturated). A fractional exponent gives
  trunc(pow(double(base), exponent)) as onnxruntime does, saturated to the type's range, NaN giving 0 (a C++
  cast leaves those undefined). A result within a few ulps of an integer is taken as that integer, so a GPU
  ``pow`` (up to 2 ulps off) truncates 4 ** 0.5 to 2, never 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from reprobuild.core.dtypes import FLOATS, NUMERIC
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType, broadcast
from reprobuild.layers.formulas import evaluate

#: An integral float exponent this large or larger is reduced modulo 2**62 (kept >= 2**62), which leaves every
#: integer power modulo 2**64 unchanged: odd bases have multiplicative order dividing 2**62, even bases reach 0.
_BIG = float(2**62)


_EPS = float(np.finfo(np.float64).eps)


class Pow(LayerDef):
    op, dtypes = "Pow", NUMERIC
    version = 2  # 2: computes through the formula table (layers/formulas.py); the same bits
    num_inputs = (2, 2)

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        if inputs[1].dtype not in NUMERIC:
            raise OpError(f"the exponent (input 1) has dtype {inputs[1].dtype}; Pow supports {', '.join(NUMERIC)}")
        return [TensorType(broadcast(inputs[0].shape, inputs[1].shape), inputs[0].dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        base, exponent = inputs
        if str(base.dtype) in FLOATS:
            return [float_power(xp, base, exponent).astype(base.dtype)]
        return [integer_power(xp, base, exponent).astype(base.dtype, copy=False)]


def float_power(xp: Any, base: Any, exponent: Any) -> Any:
    integral = exponent.dtype.kind in "iu"
    wide = integral or "float64" in (str(base.dtype), str(exponent.dtype))
    work = xp.float64 if wide else xp.float32
    b, e = base.astype(work), exponent.astype(work)
    if not integral:
        return evaluate(xp, "Pow", [b, e], {})
    odd = xp.bitwise_and(exponent, exponent.dtype.type(1)) != 0
    magnitude = xp.power(xp.abs(b), e)
    return xp.where(xp.signbit(b) & odd, -magnitude, magnitude)


def integer_power(xp: Any, base: Any, exponent: Any) -> Any:
    """Integer base: exact powers for integral exponents, trunc(pow) for fractional ones (module docstring)."""
    if exponent.dtype.kind in "iu":
        negative = exponent < 0 if exponent.dtype.kind == "i" else None
        odd = xp.bitwise_and(exponent, exponent.dtype.type(1)) != 0
        # abs in int64 first: abs(INT64_MIN) wraps to itself, whose uint64 view is the right magnitude 2**63
        magnitude = xp.abs(exponent.astype(xp.int64)).astype(xp.uint64) if negative is not None else \
            exponent.astype(xp.uint64)
        power = exact_power(xp, base, magnitude)
        return power if negative is None else xp.where(negative, negative_power(xp, base, odd), power)
    e = exponent.astype(xp.float64)
    size = xp.abs(e)
    integral = xp.isfinite(e) & (e == xp.trunc(e))
    reduced = xp.where(size >= _BIG, _BIG + xp.fmod(size, _BIG), size)
    magnitude = xp.where(integral, reduced, 0.0).astype(xp.uint64)
    odd = xp.fmod(reduced, 2.0) == 1.0
    exact = xp.where(e < 0, negative_power(xp, base, odd), exact_power(xp, base, magnitude))
    approximate = truncate_to(xp, xp.power(base.astype(xp.float64), e), base.dtype)
    return xp.where(integral, exact, approximate)


def exact_power(xp: Any, base: Any, magnitude: Any) -> Any:
    """base ** magnitude (uint64) by squaring, over all 64 bits of the exponent, wrapping in the base's type."""
    shape = broadcast(base.shape, magnitude.shape)
    result = xp.ones(shape, dtype=base.dtype)
    square = xp.broadcast_to(base, shape)
    one = np.uint64(1)
    for bit in range(64):
        set_bit = xp.bitwise_and(xp.right_shift(magnitude, np.uint64(bit)), one) != 0
        result = xp.where(set_bit, result * square, result)
        square = square * square
    return result


def negative_power(xp: Any, base: Any, odd: Any) -> Any:
    """trunc(1 / base ** n) for n > 0: 1 for base 1, (-1) ** n for base -1, 0 for |base| >= 2, max for base 0."""
    dtype = base.dtype
    zero, one, top = dtype.type(0), dtype.type(1), dtype.type(np.iinfo(dtype).max)
    out = xp.where(base == one, one, xp.where(base == zero, top, zero))
    if dtype.kind == "i":
        out = xp.where((base == -one) & odd, -one, xp.where(base == -one, one, out))
    return out


def truncate_to(xp: Any, value: Any, dtype: Any) -> Any:
    """float64 ``value`` truncated toward zero into the integer ``dtype``, saturated, NaN giving 0; a value within
    4 ulps of an integer counts as that integer (see the module docstring)."""
    info = np.iinfo(dtype)
    nearest = xp.rint(value)
    snap = xp.abs(value - nearest) <= 4 * _EPS * xp.abs(nearest)
    t = xp.where(snap, nearest, xp.trunc(value))
    high, low = t >= float(info.max), t <= float(info.min)
    inside = xp.where(high | low | xp.isnan(t), 0.0, t).astype(dtype)
    return xp.where(high, dtype.type(info.max), xp.where(low, dtype.type(info.min), inside))

"""Elementwise math: one formula per op on one input (Abs, Exp, Sin, Round, Sign, IsNaN, ...), plus Pow (in
``_math_pow``) and Mod (in ``_math_mod``).

Float formulas compute float16 and bfloat16 in float32 and round once (``Unary``'s upcast). Abs, Ceil, Erf, Exp,
Floor, Log, Neg, Reciprocal, Sqrt, Tanh and Pow's float32 path compute their formula from the table in
``reprobuild.layers.formulas`` (the one the generated kernels' C is written from); Erf-9's integer path truncates the
table's erf of the float64 value, Pow's integer and float64 paths are their own.

ONNX subtleties:

- Integer types where ONNX allows them: Abs and Sign on every integer type, Neg on signed ones, all wrapping
  around like C (Abs and Neg of INT_MIN give INT_MIN). Ceil, Floor, Round and the transcendental ops take
  floats only.
- Erf-9 also takes integers: erf of the value, truncated toward zero into the type (so 0, or ±1 from |x| = 6 on).
- Round rounds half to even (NumPy's and CuPy's ``round``), as ONNX specifies.
- Sign of NaN is NaN, of ±0 is +0.
- IsNaN-20 and IsInf-20 take the float8 types as well; they are widened to float32 (exactly) first. IsInf's
  canonical attributes are ``detect_negative`` and ``detect_positive``, 0 or 1.
- Versions older than opset 7 are listed only where opset 7 still resolves to them: the frontend upgrades older
  models to opset 7 first.
"""

from __future__ import annotations

from typing import Any

from reprobuild.core.dtypes import FLOATS, NUMERIC, SIGNED
from reprobuild.layers._math_mod import Mod
from reprobuild.layers._math_pow import Pow
from reprobuild.layers.base import Attrs
from reprobuild.layers.families import Unary
from reprobuild.layers.formulas import evaluate

_FLOAT8 = ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz")


class Abs(Unary):
    op, dtypes = "Abs", NUMERIC
    version = 2  # 2: computes through the formula table (layers/formulas.py); the same bits

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return evaluate(xp, "Abs", [x], attrs)


class Acos(Unary):
    op = "Acos"

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.arccos(x)


class Acosh(Unary):
    op = "Acosh"

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.arccosh(x)


class Asin(Unary):
    op = "Asin"

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.arcsin(x)


class Asinh(Unary):
    op = "Asinh"

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.arcsinh(x)


class Atan(Unary):
    op = "Atan"

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.arctan(x)


class Atanh(Unary):
    op = "Atanh"

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.arctanh(x)


class Ceil(Unary):
    op = "Ceil"
    version = 2  # 2: computes through the formula table (layers/formulas.py); the same bits

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return evaluate(xp, "Ceil", [x], attrs)


class Cos(Unary):
    op = "Cos"

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.cos(x)


class Cosh(Unary):
    op = "Cosh"

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.cosh(x)


class Erf(Unary):
    op, dtypes = "Erf", NUMERIC
    version = 2  # 2: computes through the formula table (layers/formulas.py); the same bits

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        if x.dtype.kind in "iu":  # Erf-9 on integers: erf of the value, truncated toward zero into the type
            return xp.trunc(evaluate(xp, "Erf", [x.astype(xp.float64)], attrs))
        return evaluate(xp, "Erf", [x], attrs)


class Exp(Unary):
    op = "Exp"
    version = 2  # 2: computes through the formula table (layers/formulas.py); the same bits

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return evaluate(xp, "Exp", [x], attrs)


class Floor(Unary):
    op = "Floor"
    version = 2  # 2: computes through the formula table (layers/formulas.py); the same bits

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return evaluate(xp, "Floor", [x], attrs)


class IsInf(Unary):
    op, dtypes, out_dtype = "IsInf", (*FLOATS, *_FLOAT8), "bool"
    version = 2

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        x = _widened(xp, x)
        positive = x == float("inf") if attrs["detect_positive"] else xp.zeros(x.shape, dtype=bool)
        negative = x == float("-inf") if attrs["detect_negative"] else xp.zeros(x.shape, dtype=bool)
        return positive | negative


class IsNaN(Unary):
    op, dtypes, out_dtype = "IsNaN", (*FLOATS, *_FLOAT8), "bool"

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.isnan(_widened(xp, x))


def _widened(xp: Any, x: Any) -> Any:
    """float8 values as float32 (exact); NumPy's ufuncs do not all know ml_dtypes' types."""
    return x if str(x.dtype) in FLOATS else x.astype(xp.float32)


class Log(Unary):
    op = "Log"
    version = 2  # 2: computes through the formula table (layers/formulas.py); the same bits

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return evaluate(xp, "Log", [x], attrs)


class Neg(Unary):
    op, dtypes = "Neg", (*SIGNED, *FLOATS)
    version = 2  # 2: computes through the formula table (layers/formulas.py); the same bits

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return evaluate(xp, "Neg", [x], attrs)


class Reciprocal(Unary):
    op = "Reciprocal"
    version = 2  # 2: computes through the formula table (layers/formulas.py); the same bits

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return evaluate(xp, "Reciprocal", [x], attrs)


class Round(Unary):
    op = "Round"

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.round(x)


class Sign(Unary):
    op, dtypes = "Sign", NUMERIC

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        zero, one = xp.zeros_like(x), xp.ones_like(x)
        if x.dtype.kind == "u":
            return xp.where(x > 0, one, zero)
        return xp.where(x > 0, one, xp.where(x < 0, -one, xp.where(x == 0, zero, x)))


class Sin(Unary):
    op = "Sin"

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.sin(x)


class Sinh(Unary):
    op = "Sinh"

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.sinh(x)


class Sqrt(Unary):
    op = "Sqrt"
    version = 2  # 2: computes through the formula table (layers/formulas.py); the same bits

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return evaluate(xp, "Sqrt", [x], attrs)


class Tan(Unary):
    op = "Tan"

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.tan(x)


class Tanh(Unary):
    op = "Tanh"
    version = 2  # 2: computes through the formula table (layers/formulas.py); the same bits

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return evaluate(xp, "Tanh", [x], attrs)


LAYERS = (Abs(), Acos(), Acosh(), Asin(), Asinh(), Atan(), Atanh(), Ceil(), Cos(), Cosh(), Erf(), Exp(), Floor(),
          IsInf(), IsNaN(), Log(), Mod(), Neg(), Pow(), Reciprocal(), Round(), Sign(), Sin(), Sinh(), Sqrt(), Tan(),
          Tanh())

"""Elementwise math: one formula per op on one input (Abs, Exp, Sin, Round, Sign, IsNaN, ...), plus Pow (in
``_math_pow``) and Mod (in ``_math_mod``).

Float formulas compute float16 and bfloat16 in float32 and round once (``Unary``'s upcast).

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
from reprobuild.ops._math_mod import Mod
from reprobuild.ops._math_pow import Pow
from reprobuild.ops._xp import erf
from reprobuild.ops.base import Attrs, Node
from reprobuild.ops.families import Unary

_FLOAT8 = ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz")
#: Versions by the opset that introduced the op (or its opset-7 form).
_V6, _V7, _V9 = (6, 13), (7, 22), (9, 22)


class Abs(Unary):
    op, versions, dtypes = "Abs", _V6, NUMERIC

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.abs(x)


class Acos(Unary):
    op, versions = "Acos", _V7

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.arccos(x)


class Acosh(Unary):
    op, versions = "Acosh", _V9

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.arccosh(x)


class Asin(Unary):
    op, versions = "Asin", _V7

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.arcsin(x)


class Asinh(Unary):
    op, versions = "Asinh", _V9

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.arcsinh(x)


class Atan(Unary):
    op, versions = "Atan", _V7

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.arctan(x)


class Atanh(Unary):
    op, versions = "Atanh", _V9

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.arctanh(x)


class Ceil(Unary):
    op, versions = "Ceil", _V6

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.ceil(x)


class Cos(Unary):
    op, versions = "Cos", _V7

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.cos(x)


class Cosh(Unary):
    op, versions = "Cosh", _V9

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.cosh(x)


class Erf(Unary):
    op, versions, dtypes = "Erf", (9, 13), NUMERIC

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        if x.dtype.kind in "iu":
            return xp.trunc(erf(xp, x.astype(xp.float64)))
        return erf(xp, x)


class Exp(Unary):
    op, versions = "Exp", _V6

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.exp(x)


class Floor(Unary):
    op, versions = "Floor", _V6

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.floor(x)


class IsInf(Unary):
    op, versions, dtypes, out_dtype = "IsInf", (10, 20), (*FLOATS, *_FLOAT8), "bool"
    version = 2

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        return {key: int(int(value) != 0) for key, value in attrs.items()}

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        x = _widened(xp, x)
        positive = x == float("inf") if attrs["detect_positive"] else xp.zeros(x.shape, dtype=bool)
        negative = x == float("-inf") if attrs["detect_negative"] else xp.zeros(x.shape, dtype=bool)
        return positive | negative


class IsNaN(Unary):
    op, versions, dtypes, out_dtype = "IsNaN", (9, 13, 20), (*FLOATS, *_FLOAT8), "bool"

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.isnan(_widened(xp, x))


def _widened(xp: Any, x: Any) -> Any:
    """float8 values as float32 (exact); NumPy's ufuncs do not all know ml_dtypes' types."""
    return x if str(x.dtype) in FLOATS else x.astype(xp.float32)


class Log(Unary):
    op, versions = "Log", _V6

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.log(x)


class Neg(Unary):
    op, versions, dtypes = "Neg", _V6, (*SIGNED, *FLOATS)

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.negative(x)


class Reciprocal(Unary):
    op, versions = "Reciprocal", _V6

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.reciprocal(x)


class Round(Unary):
    op, versions = "Round", (11, 22)

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.round(x)


class Sign(Unary):
    op, versions, dtypes = "Sign", (9, 13), NUMERIC

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        zero, one = xp.zeros_like(x), xp.ones_like(x)
        if x.dtype.kind == "u":
            return xp.where(x > 0, one, zero)
        return xp.where(x > 0, one, xp.where(x < 0, -one, xp.where(x == 0, zero, x)))


class Sin(Unary):
    op, versions = "Sin", _V7

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.sin(x)


class Sinh(Unary):
    op, versions = "Sinh", _V9

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.sinh(x)


class Sqrt(Unary):
    op, versions = "Sqrt", _V6

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.sqrt(x)


class Tan(Unary):
    op, versions = "Tan", _V7

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.tan(x)


class Tanh(Unary):
    op, versions = "Tanh", _V6

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.tanh(x)


OPS = (Abs(), Acos(), Acosh(), Asin(), Asinh(), Atan(), Atanh(), Ceil(), Cos(), Cosh(), Erf(), Exp(), Floor(),
       IsInf(), IsNaN(), Log(), Mod(), Neg(), Pow(), Reciprocal(), Round(), Sign(), Sin(), Sinh(), Sqrt(), Tan(),
       Tanh())

"""Mod: the remainder of A / B, elementwise with numpy broadcasting, in one of two conventions.

- ``fmod=0`` (the default): ``A - floor(A / B) * B``, Python's ``%``: the result has the sign of the divisor.
  Mod-10 and Mod-13 allow it on integers only; Mod-28 defines it on floats as well (NumPy's ``np.mod``, with
  its special cases: ``x mod ±inf`` is x when the signs agree and ±inf otherwise, a zero result takes B's sign).
  Floats are accepted in every version, with Mod-28's meaning.
- ``fmod=1``: ``A - trunc(A / B) * B``, C's ``fmod``: the result has the sign of the dividend.

Integers never go through floating point (CuPy's integer ``fmod`` does, and loses int64 precision), and never
divide by 0 or -1 (INT_MIN % -1 traps in C): x mod -1 is 0 in both conventions, and x mod 0 — which ONNX
leaves undefined — is 0 here, as in NumPy. Floats are computed from ``fmod``, which is exact, so float16 and
bfloat16 (computed in float32) round once.
"""

from __future__ import annotations

from typing import Any

from reprobuild.core.dtypes import NUMERIC
from reprobuild.layers.base import Attrs
from reprobuild.layers.families import Binary


class Mod(Binary):
    op, dtypes = "Mod", NUMERIC
    version = 2

    def fn(self, xp: Any, a: Any, b: Any, attrs: Attrs) -> Any:
        if a.dtype.kind in "iu":
            return integer_mod(xp, a, b, truncated=bool(attrs["fmod"]))
        return float_mod(xp, a, b, truncated=bool(attrs["fmod"]))


def integer_mod(xp: Any, a: Any, b: Any, truncated: bool) -> Any:
    """The floor remainder from floor division (exact in integers), turned into the truncated one if asked."""
    zero, one = a.dtype.type(0), a.dtype.type(1)
    trivial = (b == zero) | (b == -one) if a.dtype.kind == "i" else b == zero
    safe = xp.where(trivial, one, b)
    r = a - (a // safe) * safe  # |(a // safe) * safe| <= |a|: nothing overflows
    if truncated and a.dtype.kind == "i":
        r = xp.where((r != zero) & ((r < zero) != (a < zero)), r - safe, r)
    return xp.where(trivial, zero, r)


def float_mod(xp: Any, a: Any, b: Any, truncated: bool) -> Any:
    """``fmod``, or NumPy's floor remainder built from it (npy_divmod): where the signs of the remainder and the
    divisor differ, add the divisor; a zero remainder takes the divisor's sign."""
    r = xp.fmod(a, b)
    if truncated:
        return r
    r = xp.where((r != 0) & ((r < 0) != (b < 0)), r + b, r)
    return xp.where(r == 0, xp.copysign(xp.zeros_like(r), b), r)

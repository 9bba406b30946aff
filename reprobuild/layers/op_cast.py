"""Cast and CastLike: one canonical layer, ``Cast``, with attributes ``to`` (a dtype name), ``saturate`` (0/1)
and ``round_mode`` (up/down/nearest). CastLike becomes a Cast to its second input's dtype.

``saturate`` only matters for the float8 targets and float8e8m0, ``round_mode`` only for float8e8m0: elsewhere
they are canonicalized to 1 and "up", so equal casts compare equal. Versions before 19 (no ``saturate``) never
cast to float8. Strings, complex numbers and the 6-bit floats of Cast 28 are refused: reprobuild has no such
tensors.

ONNX subtleties, and what reprobuild does:

- float to integer is undefined in ONNX when the value is out of range. NumPy, CUDA and ml_dtypes each do
  something else there, so reprobuild defines it, the same on every backend: truncate toward zero, then wrap to
  the target's width as integer casts do (two's complement), which is what x86 NumPy and onnxruntime do for
  the 8-to-64-bit integer types; NaN, +-inf and values outside [-2**63, 2**63) (uint64: [-2**63, 2**64))
  give 0. The 4- and 2-bit integers follow ml_dtypes >= 0.7 (the reference evaluator's results): a truncated
  value outside the target's range gives 0 there too (ml_dtypes before 0.7 wrapped; integer-to-int4 casts
  still wrap).
- float to bool: 0 and -0 give False, everything else (NaN too) True.
- bfloat16 and the storage-only formats exist only on the CPU; their rules live in ``_cast_narrow``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ml_dtypes

from reprobuild.core.dtypes import ALL, DTYPES, INTEGERS, is_float, np_dtype
from reprobuild.layers._cast_narrow import E8M0, FLOAT8, HOST_ONLY, saturate_to_float8, to_e8m0, widen
from reprobuild.layers._xp import is_numpy
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType

ROUND_MODES = ("up", "down", "nearest")


_NARROW_INTS = ("int4", "uint4", "int2", "uint2")


def float_to_int(xp: Any, x: Any, to: str) -> Any:
    """Float ``x`` cast to the integer type ``to``: truncated toward zero and wrapped to the target's width;
    NaN, inf and values beyond the 64-bit range (for the 4- and 2-bit types, beyond the type's range) give 0
    (see the module docstring)."""
    t = xp.trunc(x.astype(xp.float64))
    small = (t >= -(2.0**63)) & (t < 2.0**63)  # False for NaN
    if to in _NARROW_INTS:
        info = ml_dtypes.iinfo(np_dtype(to))
        small = (t >= float(info.min)) & (t <= float(info.max))
        return xp.where(small, t, 0.0).astype(xp.int64).astype(np_dtype(to))
    wrapped = xp.where(small, t, 0.0).astype(xp.int64)
    if to != "uint64":
        return wrapped.astype(to)
    big = (t >= 2.0**63) & (t < 2.0**64)
    high = xp.where(big, t - 2.0**63, 0.0).astype(xp.uint64) + xp.uint64(2**63)
    return xp.where(big, high, wrapped.astype(xp.uint64))


def cast(xp: Any, x: Any, to: str, saturate: bool = True, round_mode: str = "up") -> Any:
    """``x`` cast to dtype ``to`` with ONNX's rules (see the module docstring)."""
    if (str(x.dtype) in HOST_ONLY or to in HOST_ONLY) and not is_numpy(xp):
        raise OpError(f"casting {x.dtype} to {to} needs ml_dtypes, which only the CPU has")
    if is_numpy(xp):
        x = widen(x)
    if to == "bool":
        return x != 0
    if to == E8M0:
        return to_e8m0(x, saturate, round_mode)
    if to in FLOAT8 and saturate:
        return saturate_to_float8(x, to)
    if (to in INTEGERS or to in _NARROW_INTS) and is_float(str(x.dtype)):
        return float_to_int(xp, x, to)
    return x.astype(np_dtype(to) if to in HOST_ONLY else to)


class Cast(LayerDef):
    op = "Cast"
    version = 2
    dtypes = ALL

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        to = str(attrs["to"])
        if to not in DTYPES:
            raise OpError(f"'to' is {to!r}; it must be one of {', '.join(DTYPES)}")
        if attrs["round_mode"] not in ROUND_MODES:
            raise OpError(f"round_mode {attrs['round_mode']!r} is not one of {', '.join(ROUND_MODES)}")
        return [TensorType(inputs[0].shape, to)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        return [cast(xp, inputs[0], str(attrs["to"]), bool(attrs["saturate"]), str(attrs["round_mode"]))]


LAYERS = (Cast(),)

"""Casts that involve bfloat16 or a storage-only format (float8, float4, float8e8m0, int4/uint4, int2/uint2).

These dtypes exist only as ml_dtypes NumPy dtypes, so these casts run on the host (NumPy) alone; CuPy has no such
arrays. They follow onnx's reference (``onnx.reference.ops.op_cast.cast_to``), whose outputs are the node suite's
expected values:

- to float8 with ``saturate=1``: clip to the format's finite range, then round to nearest even (ml_dtypes);
  with ``saturate=0``: ml_dtypes' conversion (out of range gives inf where the format has one, else NaN);
- to float8e8m0: ``onnx.numpy_helper.to_float8e8m0``'s bit arithmetic on the float32 value (the exponent is
  kept; ``round_mode`` says when the mantissa bumps it; ``saturate`` keeps 254 from overflowing to NaN);
- to float4e2m1: ml_dtypes' conversion, which saturates (the format has neither inf nor NaN);
- everything else: through a wide type that holds every value of the narrow one exactly.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from reprobuild.core.dtypes import NARROW, np_dtype

FLOAT8: tuple[str, ...] = ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz")


E8M0 = "float8_e8m0fnu"


#: Types that only NumPy (with ml_dtypes) holds.
HOST_ONLY: tuple[str, ...] = ("bfloat16", *NARROW)


_NARROW_INTS = {"int4": np.int8, "uint4": np.uint8, "int2": np.int8, "uint2": np.uint8}


def widen(x: np.ndarray) -> np.ndarray:
    """A host-only array as a standard NumPy type that holds each of its values exactly (float32 for the float
    formats, float8e8m0's 2^-127 included; int8/uint8 for the small integers); bool as uint8."""
    name = x.dtype.name
    if name in _NARROW_INTS:
        return x.astype(_NARROW_INTS[name])
    if name in HOST_ONLY:
        return x.astype(np.float32)
    if name == "bool":
        return x.astype(np.uint8)
    return x


def saturate_to_float8(x: np.ndarray, to: str) -> np.ndarray:
    """Clip to the float8 format's finite range (NaN stays NaN), then round: onnx's ``saturate_cast``."""
    info = ml_dtypes.finfo(np_dtype(to))
    if x.dtype.kind not in "f":
        x = x.astype(np.float64)  # exact for every value that is not saturated anyway
    return np.clip(x, info.min, info.max).astype(np_dtype(to))


def to_e8m0(x: np.ndarray, saturate: bool, round_mode: str) -> np.ndarray:
    """float8e8m0 (a biased power-of-two exponent) of ``x`` as float32, as ``onnx.numpy_helper.to_float8e8m0``:
    the float32 exponent field, plus one when ``round_mode`` says the mantissa rounds it up; NaN and inf give
    0xFF (NaN). The sign is ignored (negative inputs are undefined in ONNX)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    exponent = ((bits >> 23) & 0xFF).astype(np.uint16)
    special = exponent == 0xFF
    if round_mode == "up":
        up = (bits & 0x7FFFFF) != 0
    elif round_mode == "nearest":
        guard, rnd, sticky = (bits & 0x400000) != 0, (bits & 0x200000) != 0, (bits & 0x1FFFFF) != 0
        up = guard & (rnd | sticky | (exponent > 0))
    else:  # down: truncate the mantissa
        up = np.zeros(bits.shape, dtype=bool)
    up &= ~special
    if saturate:
        up &= exponent != 0xFE
    out = np.where(special, np.uint16(0xFF), exponent + up.astype(np.uint16)).astype(np.uint8)
    return out.view(np_dtype(E8M0))

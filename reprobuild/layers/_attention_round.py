"""Arithmetic "in float16 or bfloat16" with any array module: computed in float32, rounded to the narrow type
after every step, as ONNX function bodies (and NumPy) do it.

Attention's spec names the precision of each step (the scores in the query's type, the softmax in
``softmax_precision``), so a half-precision Attention is not "float32 rounded once at the end": each named step
rounds. CuPy has no bfloat16, so bfloat16 rounding is done on the float32 bits (round to nearest even, NaN kept),
which is exactly what ml_dtypes' cast does; the same code then runs on the CPU and the GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

HALF = ("float16", "bfloat16")


def work_dtype(dtype: str) -> str:
    """The dtype the arithmetic of ``dtype`` runs in: float32 for the half types, else ``dtype`` itself."""
    return "float32" if dtype in HALF else dtype


def round_to_bfloat16(xp: Any, x: Any) -> Any:
    """float32 values rounded to the nearest bfloat16 (ties to even), still as float32; NaN stays NaN."""
    bits = x.astype(xp.float32).view(xp.uint32)
    rounded = (bits + (((bits >> 16) & 1) + 0x7FFF).astype(xp.uint32)) & xp.uint32(0xFFFF0000)
    return xp.where(xp.isnan(x), x, rounded.view(xp.float32))


def rounder(xp: Any, dtype: str) -> Callable[[Any], Any]:
    """A function that rounds work-dtype values to ``dtype`` (and keeps them in the work dtype)."""
    if dtype == "float16":
        return lambda x: x.astype(xp.float16).astype(xp.float32)
    if dtype == "bfloat16":
        return lambda x: round_to_bfloat16(xp, x)
    return lambda x: x


def cast(xp: Any, x: Any, dtype: str) -> Any:
    """``x`` as ``dtype``; bfloat16 exists only in NumPy (ml_dtypes), so only the CPU asks for it."""
    if dtype == "bfloat16":
        import ml_dtypes  # lazy: slow to load (0.75 s), and only bfloat16 needs it

        return x.astype(ml_dtypes.bfloat16)
    return x.astype(getattr(xp, dtype), copy=False)

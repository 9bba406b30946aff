"""Tensor element types: their canonical names and NumPy dtypes, in one place.

A dtype is named by NumPy's name for it (``float32``, ``bfloat16``, ``float8_e4m3fn``, ...) everywhere: IR,
manifest, engine file and runtime. NumPy lacks bfloat16, the float8/float4 formats and the 4- and 2-bit
integers; ml_dtypes (a dependency of onnx) provides them as NumPy dtypes, one element per byte. Nothing here
imports onnx: the runtime needs dtypes too.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np

from reprobuild.core.errors import ModelError

#: Every element type a tensor may have, in a fixed order.
DTYPES: tuple[str, ...] = (
    "bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
    "float16", "bfloat16", "float32", "float64",
    "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu", "float4_e2m1fn",
    "int4", "uint4", "int2", "uint2",
)

FLOATS: tuple[str, ...] = ("float16", "bfloat16", "float32", "float64")
SIGNED: tuple[str, ...] = ("int8", "int16", "int32", "int64")
UNSIGNED: tuple[str, ...] = ("uint8", "uint16", "uint32", "uint64")
INTEGERS: tuple[str, ...] = SIGNED + UNSIGNED
#: The types arithmetic ops accept: every float and integer type NumPy computes in.
NUMERIC: tuple[str, ...] = INTEGERS + FLOATS
#: The storage-only formats (float8, float4, int4, int2): Cast, QuantizeLinear and DequantizeLinear use them.
NARROW: tuple[str, ...] = ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu",
                           "float4_e2m1fn", "int4", "uint4", "int2", "uint2")
ALL: tuple[str, ...] = DTYPES

_ML = {name: np.dtype(getattr(ml_dtypes, name)) for name in ("bfloat16", *NARROW)}


def np_dtype(name: str) -> np.dtype[Any]:
    """The NumPy dtype of a canonical name; a ModelError for a name that is not one."""
    if name in _ML:
        return _ML[name]
    if name not in DTYPES:
        raise ModelError(f"unknown dtype {name!r}; reprobuild knows: {', '.join(DTYPES)}")
    return np.dtype(name)


def dtype_name(dtype: Any) -> str:
    """The canonical name of a NumPy dtype (or of anything ``np.dtype`` accepts)."""
    name = np.dtype(dtype).name
    if name not in DTYPES:
        raise ModelError(f"dtype {name!r} is not supported; reprobuild knows: {', '.join(DTYPES)}")
    return name


def itemsize(name: str) -> int:
    return int(np_dtype(name).itemsize)


def is_float(name: str) -> bool:
    return name in FLOATS or name.startswith("float8") or name.startswith("float4")

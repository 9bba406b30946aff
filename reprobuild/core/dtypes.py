"""Tensor element types: their canonical names and NumPy dtypes, in one place.

A dtype is named by NumPy's name for it (``float32``, ``bfloat16``, ``float8_e4m3fn``, ...) everywhere: IR,
manifest, engine file and runtime. NumPy lacks bfloat16, the float8/float4 formats and the 4- and 2-bit
integers; ml_dtypes (a dependency of onnx) provides them as NumPy dtypes, one element per byte. Nothing here
imports onnx: the runtime needs dtypes too. ml_dtypes itself is imported only when one of its types is first
asked for (``_MlDtypes``): loading its C extension is most of a fresh runtime's start-up, and an engine of
standard NumPy types never needs it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

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

#: The types ml_dtypes provides (NumPy has none of them).
ML_DTYPES: tuple[str, ...] = ("bfloat16", *NARROW)


class _MlDtypes(dict[str, "np.dtype[Any]"]):
    """The NumPy dtypes of ``ML_DTYPES``, by name: a dict that imports ml_dtypes when a value is first read.

    ``name in _ML`` needs no import. It is a dict (not a function) so that ``np_dtype``'s code, and the form a
    tactic's identity records of this value (every item, which reading them loads), are exactly what they were
    when the dict was filled at import: moving the import changes no tactic's ``code_sha256``."""

    _lock = threading.Lock()

    def _load(self) -> None:
        if not dict.__len__(self):
            with self._lock:
                if not dict.__len__(self):
                    # Lazy on purpose: ml_dtypes' C extension is slow to load and only narrow types need it.
                    import ml_dtypes

                    dict.update(self, {name: np.dtype(getattr(ml_dtypes, name)) for name in ML_DTYPES})

    def __contains__(self, name: object) -> bool:
        return name in ML_DTYPES

    def __getitem__(self, name: str) -> np.dtype[Any]:
        self._load()
        return dict.__getitem__(self, name)

    def get(self, name: str, default: Any = None) -> Any:
        self._load()
        return dict.get(self, name, default)

    def __iter__(self) -> Iterator[str]:
        self._load()
        return dict.__iter__(self)

    def __len__(self) -> int:
        return len(ML_DTYPES)

    def keys(self) -> Any:
        self._load()
        return dict.keys(self)

    def values(self) -> Any:
        self._load()
        return dict.values(self)

    def items(self) -> Any:
        self._load()
        return dict.items(self)


_ML = _MlDtypes()


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

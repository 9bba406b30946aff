"""What the quantization ops share: the quantized types and their ranges, the three granularities of a scale
(per tensor, per axis, blocked), and saturating float -> quantized conversion.

Storage-only types (int4/uint4/int2/uint2, float8, float4) exist only as ml_dtypes NumPy dtypes, so layers
with them run on the CPU; int8/uint8/int16/uint16 run anywhere.
"""

from __future__ import annotations

import math
from typing import Any

import ml_dtypes
import numpy as np

from reprobuild.core.dtypes import np_dtype
from reprobuild.layers.base import OpError, TensorType, axis_in_range

#: Integer quantized types and their saturation ranges.
INT_RANGES: dict[str, tuple[int, int]] = {
    "uint8": (0, 255), "int8": (-128, 127), "uint16": (0, 65535), "int16": (-32768, 32767),
    "uint4": (0, 15), "int4": (-8, 7), "uint2": (0, 3), "int2": (-2, 1),
}


FLOAT8 = ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz")


FLOAT4 = ("float4_e2m1fn",)


QUANT_TYPES = (*INT_RANGES, *FLOAT8, *FLOAT4)


#: Float types a scale may have; float8e8m0 (opset 24 on, a power of two; CPU only) is read as float32.
E8M0 = "float8_e8m0fnu"


SCALE_TYPES = ("float32", "float16", "bfloat16", E8M0)


def granularity(x: TensorType, scale: TensorType, axis: int | None, block: int) -> tuple[int, int]:
    """(axis, block_size) of a scale for ``x``: (0, 0) per tensor (one element), (axis, 0) per axis (a 1-D
    scale as long as that axis), (axis, block) blocked (the input's shape, that axis ceil(n / block) long).
    An OpError saying which shape was expected otherwise."""
    if scale.size == 1:
        return 0, 0
    if axis is None:
        raise OpError(f"the scale has shape {list(scale.shape)}; this version takes only a single scale")
    axis = axis_in_range(axis, x.rank)
    if block < 0:
        raise OpError(f"block_size={block} must be positive (or 0: not blocked)")
    if block == 0:
        if scale.shape != (x.shape[axis],):
            raise OpError(f"a per-axis scale for input {list(x.shape)} along axis {axis} must have shape "
                          f"[{x.shape[axis]}]; it has {list(scale.shape)}")
        return axis, 0
    want = (*x.shape[:axis], math.ceil(x.shape[axis] / block), *x.shape[axis + 1:])
    if scale.shape != want:
        raise OpError(f"a blocked scale for input {list(x.shape)} (axis {axis}, block_size {block}) must have "
                      f"shape {list(want)}; it has {list(scale.shape)}")
    return axis, block


def expand(xp: Any, value: Any, shape: tuple[int, ...], axis: int, block: int) -> Any:
    """A scale or zero point made broadcastable to ``shape``: a scalar, one value per index of ``axis``, or each
    value repeated over its block."""
    if value.size == 1:
        return value.reshape(())
    if block == 0:
        return value.reshape(tuple(n if a == axis else 1 for a, n in enumerate(shape)))
    repeated = xp.repeat(value, block, axis=axis)
    return repeated[tuple(slice(0, n) if a == axis else slice(None) for a, n in enumerate(shape))]


def check_params(scale: TensorType, zero_point: TensorType | None) -> None:
    if scale.dtype not in SCALE_TYPES:
        raise OpError(f"the scale has dtype {scale.dtype}; reprobuild takes {', '.join(SCALE_TYPES)} scales")
    if zero_point is not None and zero_point.shape != scale.shape and not zero_point.size == scale.size == 1:
        raise OpError(f"the zero point has shape {list(zero_point.shape)} but the scale {list(scale.shape)}; "
                      "they must be equal (or both hold a single value)")


def saturate_int(xp: Any, r: Any, dtype: str) -> Any:
    """Whole numbers (float64) clipped to ``dtype``'s range and stored as it; NaN gives the range's minimum
    (onnxruntime's result; ONNX leaves it undefined)."""
    low, high = INT_RANGES[dtype]
    r = xp.clip(xp.where(xp.isnan(r), float(low), r), float(low), float(high))
    return to_dtype(xp, r.astype(xp.int32), dtype)


def to_float8(x: Any, dtype: str, saturate: bool) -> Any:
    """float32 values as a float8 type (CPU only): clipped to its finite range first when ``saturate`` (NaN
    stays NaN), else ml_dtypes' conversion (overflow gives inf, or NaN where the type has no inf)."""
    if saturate:
        info = ml_dtypes.finfo(np_dtype(dtype))
        x = np.clip(x, float(info.min), float(info.max))
    return x.astype(np_dtype(dtype))


def to_dtype(xp: Any, x: Any, dtype: str) -> Any:
    """``x`` as ``dtype``; the storage-only types through ml_dtypes (so only on the CPU)."""
    if dtype in ("bfloat16", *FLOAT8, *FLOAT4, "int4", "uint4", "int2", "uint2"):
        return np.asarray(x).astype(np_dtype(dtype))
    return x.astype(getattr(xp, dtype), copy=False)

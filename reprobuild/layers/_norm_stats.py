"""What the normalization ops share: the type their statistics are computed in, and standardization.

Statistics are computed in float32, or in float64 for float64 inputs and for ``stash_type`` 11 (ONNX's
DOUBLE); results are rounded once to the output type. The reductions are NumPy's and CuPy's own, whose order
depends only on the shape: deterministic on one device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reprobuild.layers.base import OpError, TensorType, broadcast

#: ``stash_type`` values (ONNX element types) this implementation computes in, and the dtype of each.
STASH_TYPES = {1: "float32", 11: "float64"}


def check_stash_type(stash_type: Any) -> str:
    """The dtype ``stash_type`` names; an OpError for one that is not supported."""
    if stash_type not in STASH_TYPES:
        raise OpError(f"stash_type {stash_type!r} is not supported; supported: 1 (float32) and 11 (float64)")
    return STASH_TYPES[stash_type]


def check_broadcasts(t: TensorType, x: TensorType, name: str) -> None:
    """An OpError unless ``t`` broadcasts to ``x``'s shape one way (unidirectionally), as scales and biases do."""
    try:
        fits = broadcast(t.shape, x.shape) == x.shape
    except OpError:
        fits = False
    if not fits:
        raise OpError(f"{name} has shape {list(t.shape)}, which does not broadcast to the input's shape "
                      f"{list(x.shape)}; it should usually be the normalized dimensions")


def work_dtype(xp: Any, x: Any, stash_type: int = 1) -> Any:
    """The dtype statistics of ``x`` are computed in."""
    return xp.float64 if str(x.dtype) == "float64" or stash_type == 11 else xp.float32


def standardize(xp: Any, x: Any, axes: Sequence[int], epsilon: float) -> tuple[Any, Any, Any]:
    """(x - mean) / sqrt(variance + epsilon) over ``axes``, with the mean and 1 / sqrt(variance + epsilon)
    (kept dimensions). The variance is the mean of squared deviations (two passes), which cannot go negative."""
    axes = tuple(axes)
    mean = x.mean(axis=axes, keepdims=True)
    deviation = x - mean
    variance = (deviation * deviation).mean(axis=axes, keepdims=True)
    inv_std = 1 / xp.sqrt(variance + epsilon)
    return deviation * inv_std, mean, inv_std

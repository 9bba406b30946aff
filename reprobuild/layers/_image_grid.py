"""GridSample's sampling, vectorized over every output point and every interpolation tap, with any array module.

A grid point's normalized coordinates (-1 and 1 are the edges: the outer pixel edges, or the outer pixel centers
with ``align_corners``) are mapped to pixel coordinates, rounded half to even for ``nearest``. For nearest and
linear, a point out of bounds is then brought inside by the padding mode (``border``: clamped to [0, size - 1];
``reflection``: reflected at the bounds until inside). Each interpolation tap (1 for nearest, 2 per dimension for
linear, 4 for cubic) reads the input with the padding mode applied to the tap's index (``zeros``: 0 outside).

Cubic does not move the point itself, only its taps: that is PyTorch's definition (which ONNX's test data come
from) and onnxruntime's. ONNX's Python reference clamps the point too, which changes ``border`` results outside
the image (for ``reflection`` both give the same values); reprobuild follows PyTorch and onnxruntime.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

#: The cubic convolution's parameter (Keys), as PyTorch and onnxruntime use it.
CUBIC_A = -0.75


def denormalize(n: Any, size: int, align_corners: bool) -> Any:
    if align_corners:
        return (n + 1) / 2 * (size - 1)
    return ((n + 1) * size - 1) / 2


def bounds(size: int, align_corners: bool) -> tuple[float, float]:
    return (0.0, size - 1.0) if align_corners else (-0.5, size - 0.5)


def reflect(xp: Any, x: Any, lo: float, hi: float) -> Any:
    """``x`` reflected at ``lo`` and ``hi`` until it lies between them (``hi > lo``)."""
    span = hi - lo
    below, above = x < lo, x > hi
    dx = xp.where(below, lo - x, xp.where(above, x - hi, 0))
    n = xp.trunc(dx / span)
    r = dx - n * span
    even = (n % 2) == 0
    return xp.where(below, xp.where(even, lo + r, hi - r), xp.where(above, xp.where(even, hi - r, lo + r), x))


def cubic_weights(t: Any) -> list[Any]:
    a = CUBIC_A
    u, v, w = t + 1, 1 - t, 2 - t
    return [((a * u - 5 * a) * u + 8 * a) * u - 4 * a,
            ((a + 2) * t - (a + 3)) * t * t + 1,
            ((a + 2) * v - (a + 3)) * v * v + 1,
            ((a * w - 5 * a) * w + 8 * a) * w - 4 * a]


def _tap_index(xp: Any, i: Any, size: int, padding: str, lo: float, hi: float) -> tuple[Any, Any]:
    """(index inside [0, size), valid mask or None) of integer-valued float taps ``i`` (NaN reads index 0; the
    point's result is NaN anyway)."""
    i = xp.where(xp.isnan(i), 0, i)
    if padding == "zeros":
        valid = (i >= 0) & (i <= size - 1)
        return xp.clip(i, 0, size - 1).astype(xp.int64), valid
    if padding == "border":
        return xp.clip(i, 0, size - 1).astype(xp.int64), None
    return xp.clip(xp.trunc(reflect(xp, i, lo, hi)), 0, size - 1).astype(xp.int64), None


def _taps_1d(xp: Any, x: Any, mode: str) -> list[tuple[Any, Any]]:
    """(tap coordinate, weight or None) pairs of one dimension."""
    if mode == "nearest":
        return [(x, None)]
    base = xp.floor(x)
    t = x - base
    if mode == "linear":
        return [(base, 1 - t), (base + 1, t)]
    return [(base + (k - 1), w) for k, w in enumerate(cubic_weights(t))]


def grid_sample(xp: Any, x: Any, grid: Any, mode: str, padding: str, align_corners: bool, work: Any) -> Any:
    """(N, C, *spatial) sampled at grid (N, *out, r) -> (N, C, *out), computed in ``work``."""
    n_batch, channels, spatial = x.shape[0], x.shape[1], tuple(x.shape[2:])
    r, out = len(spatial), tuple(grid.shape[1:-1])
    g = grid.astype(work)
    undefined = xp.isnan(g).any(axis=-1).reshape(n_batch, 1, -1)  # a NaN coordinate gives NaN
    per_dim = []
    for d, size in enumerate(spatial):
        coord = denormalize(g[..., r - 1 - d], size, align_corners)  # the grid lists W first
        if mode == "nearest":
            coord = xp.rint(coord)
        lo, hi = bounds(size, align_corners)
        if mode == "cubic":
            pass  # the taps alone are padded (see the module docstring)
        elif padding == "border":
            coord = xp.where((coord < lo) | (coord > hi), xp.clip(coord, 0, size - 1), coord)
        elif padding == "reflection":
            coord = reflect(xp, coord, lo, hi)
        taps = []
        for tap, weight in _taps_1d(xp, coord, mode):
            index, valid = _tap_index(xp, tap, size, padding, lo, hi)
            taps.append((index, weight, valid))
        per_dim.append(taps)
    strides = [int(np.prod(spatial[d + 1:], dtype=np.int64)) for d in range(r)]
    flat_x = x.astype(work).reshape(n_batch, channels, -1)
    points = int(np.prod(out, dtype=np.int64))
    total = xp.zeros((n_batch, channels, points), dtype=work)
    zero = xp.zeros((), dtype=work)
    for combo in itertools.product(*per_dim):
        flat = sum(index * stride for (index, _, _), stride in zip(combo, strides))
        gathered = xp.take_along_axis(flat_x, xp.broadcast_to(flat.reshape(n_batch, 1, points),
                                                              (n_batch, channels, points)), axis=2)
        weights = [w for _, w, _ in combo if w is not None]
        if weights:
            gathered = gathered * _product(weights).reshape(n_batch, 1, points)
        masks = [v for _, _, v in combo if v is not None]
        if masks:  # zeros padding: a tap outside reads 0 (a where, so that an inf there cannot make a NaN)
            gathered = xp.where(_product(masks).reshape(n_batch, 1, points), gathered, zero)
        total = total + gathered
    total = xp.where(undefined, xp.asarray(np.nan, dtype=work), total)
    return total.reshape((n_batch, channels, *out))


def _product(factors: Sequence[Any]) -> Any:
    """The product of the taps' weights (or the logical and of their masks), in order."""
    result = factors[0]
    for f in factors[1:]:
        result = result * f if result.dtype != bool else result & f
    return result

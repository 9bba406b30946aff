"""Where MaxPool's windows read and where MaxUnpool writes: host-side index maps and a deterministic scatter.

MaxPool's Indices output is the flat (row-major over N, C and the spatial dimensions, or column-major over the
spatial ones with storage_order=1) index of the first maximum of each window, taps visited in row-major order, as
the ONNX reference does. Which taps fall inside the input is known from the shapes alone, so it is computed on
the host; the device only compares values.

MaxUnpool writes values at indices it is given at run time. A plain scatter leaves the winner among repeated
indices to the hardware; here the last one (in input order) wins, as in the ONNX reference, through a stable
sort: every other write of a repeated index, and every index outside the output, goes to a discarded slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from reprobuild.layers._window import taps


def tap_coordinates(size: int, kernel: int, stride: int, dilation: int, pad_begin: int, out: int) -> np.ndarray:
    """Input coordinate each (tap, output) pair reads along one dimension: (kernel, out), possibly outside."""
    return (np.arange(out) * stride - pad_begin)[None, :] + (np.arange(kernel) * dilation)[:, None]


def tap_maps(spatial: Sequence[int], kernel: Sequence[int], attrs: Any, out: Sequence[int],
             storage_order: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each kernel tap (row-major): whether it is inside the input at each output position, and the flat
    spatial index it reads there (row-major, or column-major for storage_order=1); both of shape ``out``."""
    nd = len(spatial)
    coords = [tap_coordinates(spatial[d], kernel[d], attrs["strides"][d], attrs["dilations"][d], attrs["pads"][d],
                              out[d]) for d in range(nd)]
    if storage_order:
        steps = [int(np.prod(spatial[:d], dtype=np.int64)) for d in range(nd)]
    else:
        steps = [int(np.prod(spatial[d + 1:], dtype=np.int64)) for d in range(nd)]
    maps = []
    for tap in taps(kernel):
        valid = np.ones(tuple(out), dtype=bool)
        flat = np.zeros(tuple(out), dtype=np.int64)
        for d in range(nd):
            shape = [1] * nd
            shape[d] = out[d]
            c = coords[d][tap[d]].reshape(shape)
            valid = valid & (c >= 0) & (c < spatial[d])
            flat = flat + c * steps[d]
        maps.append((valid, np.where(valid, flat, 0)))
    return maps


def argmax_windows(xp: Any, views: Sequence[Any], maps: Sequence[tuple[np.ndarray, np.ndarray]], fill: Any,
                   n: int, c: int, plane: int) -> tuple[Any, Any]:
    """The first maximum of each window and its flat index over the whole (N, C, spatial...) input."""
    best, index = None, None
    seen = np.zeros(maps[0][0].shape, dtype=bool)
    for view, (valid, flat) in zip(views, maps):
        if best is None:
            best = xp.where(xp.asarray(valid), view, fill)
            index = xp.broadcast_to(xp.asarray(flat), view.shape)
        else:
            take = xp.asarray(valid & ~seen) | (xp.asarray(valid) & (view > best))
            best = xp.where(take, view, best)
            index = xp.where(take, xp.asarray(flat), index)
        seen |= valid
    assert best is not None and index is not None
    base = (xp.arange(n * c, dtype=xp.int64) * plane).reshape((n, c) + (1,) * (best.ndim - 2))
    return best, index + base


def scatter_last_wins(xp: Any, values: Any, indices: Any, size: int) -> Any:
    """A flat array of ``size`` zeros with ``values`` written at ``indices`` (the last write of a repeated index
    wins; indices outside [0, size) are ignored)."""
    idx = indices.reshape(-1).astype(xp.int64, copy=False)
    idx = xp.where((idx >= 0) & (idx < size), idx, size)
    order = xp.argsort(idx, kind="stable")
    idx, vals = idx[order], values.reshape(-1)[order]
    last = xp.concatenate([idx[1:] != idx[:-1], xp.ones(1, dtype=bool)])
    out = xp.zeros(size + 1, dtype=values.dtype)
    out[xp.where(last, idx, size)] = vals
    return out[:size]

"""col2im: adding per-kernel-tap columns back into an image, what ConvTranspose and Col2Im share.

Block ``i`` (along one spatial dimension) and kernel tap ``t`` land on output position
``i * stride + t * dilation - pad_begin``. Within one tap those positions are distinct, so each tap is one
addition into a strided slice, and the taps are added one after another in row-major order: every output
element is the same sum in the same order on NumPy and on CuPy, with no atomics (a scatter-add would need them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reprobuild.layers._window import taps


def blocks_along(size: int, kernel: int, stride: int, dilation: int, pad_begin: int, pad_end: int) -> int:
    """How many sliding blocks fit along one dimension of a padded image (the same count Conv's output has)."""
    return (size + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride + 1


def col2im(xp: Any, cols: Any, kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int],
           pads_begin: Sequence[int], out_shape: Sequence[int]) -> Any:
    """``cols`` (N, C, K, *blocks), K the kernel taps in row-major order, summed into (N, C, *out_shape).

    Positions before 0 or past ``out_shape`` are dropped (the padding); positions no block reaches stay 0."""
    n, c, blocks = cols.shape[0], cols.shape[1], cols.shape[3:]
    nd = len(out_shape)
    # the buffer spans every position any tap reaches and the whole output: [low, high) in output coordinates
    low = [min(0, -pads_begin[d]) for d in range(nd)]
    high = [max(out_shape[d], (blocks[d] - 1) * strides[d] + (kernel[d] - 1) * dilations[d] + 1 - pads_begin[d])
            for d in range(nd)]
    buf = xp.zeros((n, c, *(high[d] - low[d] for d in range(nd))), dtype=cols.dtype)
    for t, tap in enumerate(taps(kernel)):
        index: list[slice] = [slice(None), slice(None)]
        for d in range(nd):
            start = tap[d] * dilations[d] - pads_begin[d] - low[d]
            index.append(slice(start, start + strides[d] * (blocks[d] - 1) + 1, strides[d]))
        buf[tuple(index)] += cols[:, :, t]
    crop = (slice(None), slice(None), *(slice(-low[d], -low[d] + out_shape[d]) for d in range(nd)))
    return buf[crop]

"""DeformConv's sampling: the input read at fractional, per-output positions (bilinear, zero outside).

Kernel tap ``(ki, kj)`` of output ``(i, j)`` reads the input at
``(i * stride_h - pad_top + ki * dilation_h + offset_h, j * stride_w - pad_left + kj * dilation_w + offset_w)``
with the offsets an input of the op. The value there is the bilinear blend of its four neighbouring pixels, a
neighbour outside the image counting as 0 (GridSample with align_corners=1 and zero padding, as the ONNX
reference and torchvision's deform_conv2d do). Reads are gathers (``take_along_axis``): no scatter, no atomics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from reprobuild.layers._window import taps


def deform_columns(xp: Any, x: Any, offset: Any, mask: Any, kernel: Sequence[int], strides: Sequence[int],
                   dilations: Sequence[int], pads: Sequence[int], out: Sequence[int], offset_group: int) -> Any:
    """The sampled input of every kernel tap: (N, C, K, oh * ow), the layout Conv's im2col has."""
    n, c, height, width = x.shape
    oh, ow = out
    pixels, kernel_taps = oh * ow, taps(kernel)
    cg = c // offset_group
    src = x.reshape(n, offset_group, cg, height * width)
    off = offset.reshape(n, offset_group, len(kernel_taps), 2, pixels)
    rows = (np.arange(oh) * strides[0] - pads[0]).reshape(oh, 1)
    cols_ = (np.arange(ow) * strides[1] - pads[1]).reshape(1, ow)
    result = xp.empty((n, c, len(kernel_taps), pixels), dtype=x.dtype)
    for t, (ki, kj) in enumerate(kernel_taps):
        base_h = xp.asarray(np.broadcast_to(rows + ki * dilations[0], (oh, ow)).reshape(pixels), dtype=x.dtype)
        base_w = xp.asarray(np.broadcast_to(cols_ + kj * dilations[1], (oh, ow)).reshape(pixels), dtype=x.dtype)
        h = base_h + off[:, :, t, 0]  # (N, G, pixels)
        w = base_w + off[:, :, t, 1]
        h0, w0 = xp.floor(h), xp.floor(w)
        dh, dw = h - h0, w - w0
        parts = []
        for corner_h, corner_w, weight in ((h0, w0, (1 - dh) * (1 - dw)), (h0, w0 + 1, (1 - dh) * dw),
                                           (h0 + 1, w0, dh * (1 - dw)), (h0 + 1, w0 + 1, dh * dw)):
            inside = (corner_h >= 0) & (corner_h < height) & (corner_w >= 0) & (corner_w < width)
            # outside (or NaN) corners read pixel 0 and are then replaced by 0
            flat = xp.where(inside, corner_h * width + corner_w, 0).astype(xp.int64)
            index = xp.broadcast_to(flat.reshape(n, offset_group, 1, pixels), (n, offset_group, cg, pixels))
            read = xp.take_along_axis(src, index, axis=3) * weight.reshape(n, offset_group, 1, pixels)
            parts.append(xp.where(inside.reshape(n, offset_group, 1, pixels), read, 0))
        value = ((parts[0] + parts[1]) + parts[2]) + parts[3]
        if mask is not None:
            value = value * mask.reshape(n, offset_group, len(kernel_taps), 1, pixels)[:, :, t]
        result[:, :, t, :] = value.reshape(n, c, pixels)
    return result

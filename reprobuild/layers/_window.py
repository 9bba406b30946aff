"""Sliding windows over N spatial dimensions (Conv, pooling): resolving ONNX's padding forms, output sizes, and
gathering the input elements each kernel tap meets, with any array module.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

from reprobuild.layers.base import Attrs, OpError


def window_output(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int, dilation: int,
                  ceil_mode: bool = False) -> int:
    """Output length of a sliding window, as ONNX (and onnxruntime) define it, ceil_mode included."""
    span = size + pad_begin + pad_end - dilation * (kernel - 1) - 1
    if not ceil_mode:
        return span // stride + 1
    out = math.ceil(span / stride) + 1
    if (out - 1) * stride >= size + pad_begin:  # the last window must start inside the input or its begin pad
        out -= 1
    return out


def output_spatial(spatial: Sequence[int], kernel: Sequence[int], attrs: Attrs, ceil_mode: bool = False) -> tuple[
        int, ...]:
    nd = len(spatial)
    pads, strides = attrs["pads"], attrs["strides"]
    dilations = attrs.get("dilations", (1,) * nd)
    out = tuple(window_output(spatial[i], kernel[i], strides[i], pads[i], pads[i + nd], dilations[i], ceil_mode)
                for i in range(nd))
    if min(out, default=1) < 1:
        raise OpError(f"the window does not fit: input {list(spatial)}, kernel {list(kernel)}, pads {list(pads)}, "
                      f"strides {list(strides)}, dilations {list(dilations)}")
    return out


def taps(kernel: Sequence[int]) -> list[tuple[int, ...]]:
    """Every kernel position, in row-major order (the weight's layout)."""
    return list(itertools.product(*(range(k) for k in kernel)))


def padded(xp: Any, x: Any, pads: Sequence[int], extra_end: Sequence[int], value: float) -> Any:
    """``x`` (N, C, spatial...) padded with ``value``: ``pads`` begins/ends plus ``extra_end`` more at each end."""
    nd = x.ndim - 2
    widths = [(0, 0), (0, 0)] + [(pads[i], pads[i + nd] + extra_end[i]) for i in range(nd)]
    if not any(b or e for b, e in widths):
        return x
    return xp.pad(x, widths, mode="constant", constant_values=value)


def tap_view(xp_padded: Any, tap: Sequence[int], strides: Sequence[int], dilations: Sequence[int],
             out: Sequence[int]) -> Any:
    """The elements kernel position ``tap`` meets at every output position: (N, C, *out), a strided view."""
    index = [slice(None), slice(None)]
    for t, s, d, o in zip(tap, strides, dilations, out):
        start = t * d
        index.append(slice(start, start + s * (o - 1) + 1, s))
    return xp_padded[tuple(index)]


def extra_end(spatial: Sequence[int], kernel: Sequence[int], attrs: Attrs, out: Sequence[int]) -> tuple[int, ...]:
    """How far ceil_mode's last window runs past the end pad, per dimension (0 without ceil_mode)."""
    nd = len(spatial)
    pads, strides = attrs["pads"], attrs["strides"]
    dilations = attrs.get("dilations", (1,) * nd)
    return tuple(max(0, (out[i] - 1) * strides[i] + dilations[i] * (kernel[i] - 1) + 1
                     - (spatial[i] + pads[i] + pads[i + nd])) for i in range(nd))

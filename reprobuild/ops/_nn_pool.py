"""The ONNX half of :mod:`reprobuild.layers._nn_pool` (whose docstring says what the layers compute): the ONNX versions
each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reprobuild.layers._nn_pool import tap_coordinates


def empty_windows(spatial: Sequence[int], kernel: Sequence[int], attrs: Any, out: Sequence[int]) -> list[int]:
    """Spatial dimensions along which some window lies entirely in the padding."""
    bad = []
    for d, size in enumerate(spatial):
        coords = tap_coordinates(size, kernel[d], attrs["strides"][d], attrs["dilations"][d], attrs["pads"][d], out[d])
        if not ((coords >= 0) & (coords < size)).any(axis=0).all():
            bad.append(d)
    return bad

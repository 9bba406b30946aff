"""The ONNX half of :mod:`reprobuild.layers._activation_clip` (whose docstring says what the layers compute): the ONNX
versions each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from reprobuild.layers import _activation_clip as layer
from reprobuild.layers._activation_clip import _BOUNDS
from reprobuild.ops.base import Node, OpDef

_FLT_MAX = float(np.finfo(np.float32).max)


class Clip(OpDef, layer.Clip):
    versions = (6, 11, 12, 13)

    def convert(self, node: Node) -> None:
        attrs: dict[str, Any] = {}
        inputs = [0]
        for i, key in _BOUNDS:
            if node.version < 11:
                source, value = "value", float(node.attr(key))
            elif node.input(i) is None:
                source, value = "none", 0
            else:
                const = node.const(i)
                if const is None:
                    source, value = "input", 0
                    inputs.append(i)
                else:
                    source, value = _constant_bound(node, i, key, const)
            attrs[key], attrs[f"{key}_from"] = value, source
        node.emit(attrs, inputs=inputs)


def _constant_bound(node: Node, i: int, key: str, const: np.ndarray) -> tuple[str, int | float]:
    """(source, value) of a bound input known at build time."""
    x = node.input(0)
    arr = np.asarray(const)
    assert x is not None
    if arr.size != 1:
        raise node.fail(f"input {i} ({key}) has shape {list(arr.shape)}; Clip's bounds are scalars")
    if arr.dtype.name != x.dtype:
        raise node.fail(f"input {i} ({key}) has dtype {arr.dtype.name} but the input has {x.dtype}; they must match")
    if arr.dtype.kind in "iu":
        return "value", int(arr.reshape(-1)[0])
    value = float(arr.reshape(-1)[0])
    if math.isnan(value):
        raise node.fail(f"input {i} ({key}) is NaN; a NaN bound makes every output NaN, which is surely a mistake")
    if math.isinf(value):
        if (value < 0) == (key == "min"):  # min = -inf, max = +inf: no bound
            return "none", 0
        raise node.fail(f"input {i} ({key}) is {value}; that bound sets every element to infinity, which is "
                        "not supported")
    return "value", value

"""The ONNX half of :mod:`reprobuild.layers.op_conv` (whose docstring says what the layers compute): the ONNX versions
each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from typing import Any

from reprobuild.layers import op_conv as layer
from reprobuild.layers.base import OpError, ints
from reprobuild.ops._window import resolve_window
from reprobuild.ops.base import Node, OpDef


class Conv(OpDef, layer.Conv):
    versions = (1, 11, 22)

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        x, w = node.input(0), node.input(1)
        assert x is not None and w is not None
        if x.rank < 3 or w.rank != x.rank:
            raise OpError(f"needs input and weight of equal rank >= 3 (N, C, spatial...); got {list(x.shape)} and "
                          f"{list(w.shape)}")
        kernel = ints(attrs["kernel_shape"]) if "kernel_shape" in attrs else w.shape[2:]
        if tuple(kernel) != tuple(w.shape[2:]):
            raise OpError(f"kernel_shape {list(kernel)} does not match the weight's spatial shape {list(w.shape[2:])}")
        return {**resolve_window(node, x.shape[2:], kernel, negative_same="clamp"), "group": int(attrs["group"])}


OPS = (Conv(),)

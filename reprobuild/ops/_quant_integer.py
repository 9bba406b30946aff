"""The ONNX half of :mod:`reprobuild.layers._quant_integer` (whose docstring says what the layers compute): the ONNX
versions each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from typing import Any

from reprobuild.layers import _quant_integer as layer
from reprobuild.layers.base import ints
from reprobuild.ops._window import resolve_window
from reprobuild.ops.base import Node, OpDef


class MatMulInteger(OpDef, layer.MatMulInteger):
    versions = (10,)

    def convert(self, node: Node) -> None:
        present = [i for i in range(node.num_inputs) if node.input(i) is not None]
        node.emit({"roles": tuple(("A", "B", "a_zero_point", "b_zero_point")[i] for i in present)}, inputs=present)


class QLinearMatMul(OpDef, layer.QLinearMatMul):
    versions = (10, 21)


class _IntegerConv(OpDef, layer._IntegerConv):
    def window(self, node: Node) -> dict[str, Any]:
        x, w = node.input(self.x_at), node.input(self.w_at)
        assert x is not None and w is not None
        if x.rank < 3 or w.rank != x.rank:
            raise node.fail(f"needs input and weight of equal rank >= 3 (N, C, spatial...); got {list(x.shape)} "
                            f"and {list(w.shape)}")
        kernel = ints(node.attr("kernel_shape")) if node.has_attr("kernel_shape") else w.shape[2:]
        if tuple(kernel) != tuple(w.shape[2:]):
            raise node.fail(f"kernel_shape {list(kernel)} does not match the weight's {list(w.shape[2:])}")
        window = resolve_window(node, x.shape[2:], kernel, negative_same="clamp")  # as Conv
        return {**window, "group": int(node.attr("group"))}


class ConvInteger(_IntegerConv, layer.ConvInteger):
    versions = (10,)

    def convert(self, node: Node) -> None:
        present = [i for i in range(node.num_inputs) if node.input(i) is not None]
        roles = tuple(("x", "w", "x_zero_point", "w_zero_point")[i] for i in present)
        node.emit({**self.window(node), "roles": roles}, inputs=present)


class QLinearConv(_IntegerConv, layer.QLinearConv):
    versions = (10,)

    def convert(self, node: Node) -> None:
        node.emit(self.window(node))

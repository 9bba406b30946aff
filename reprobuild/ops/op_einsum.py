"""The ONNX half of :mod:`reprobuild.layers.op_einsum` (whose docstring says what the layers compute): the ONNX versions
each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from reprobuild.layers import op_einsum as layer
from reprobuild.layers.op_einsum import parse
from reprobuild.ops.base import Node, OpDef


class Einsum(OpDef, layer.Einsum):
    versions = (12, 28)

    def convert(self, node: Node) -> None:
        if not node.has_attr("equation"):
            raise node.fail("the equation attribute is required")
        shapes = [t.shape for t in (node.input(i) for i in range(node.num_inputs)) if t is not None]
        if len(shapes) != node.num_inputs:
            raise node.fail("an input is omitted (empty name); every Einsum input is an operand")
        node.emit({"equation": parse(str(node.attr("equation")), shapes).equation})


OPS = (Einsum(),)

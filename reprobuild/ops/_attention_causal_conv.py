"""The ONNX half of :mod:`reprobuild.layers._attention_causal_conv` (whose docstring says what the layers compute): the
ONNX versions each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from reprobuild.layers import _attention_causal_conv as layer
from reprobuild.layers._attention_causal_conv import ROLES
from reprobuild.ops.base import Node, OpDef

ACTIVATIONS = {"none": "none", "silu": "silu", "swish": "silu"}


class CausalConvWithState(OpDef, layer.CausalConvWithState):
    versions = (27,)

    def convert(self, node: Node) -> None:
        present = [i for i in range(node.num_inputs) if node.input(i) is not None]
        activation = str(node.attr("activation"))
        if activation not in ACTIVATIONS:
            raise node.fail(f"activation={activation!r} is not one of {', '.join(sorted(ACTIVATIONS))}")
        node.emit({"activation": ACTIVATIONS[activation], "roles": tuple(ROLES[i] for i in present)},
                  inputs=present)

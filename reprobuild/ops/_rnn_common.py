"""The ONNX half of :mod:`reprobuild.layers._rnn_common` (whose docstring says what the layers compute): the ONNX
versions each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reprobuild.layers import _rnn_common as layer
from reprobuild.layers._rnn_common import _DIRECTIONS
from reprobuild.layers.base import OpError
from reprobuild.ops._rnn_act import canonical_activations
from reprobuild.ops.base import Node, OpDef

OUTPUT_NAMES = ("Y", "Y_h", "Y_c")


class Recurrent(OpDef, layer.Recurrent):
    versions = (7, 14, 22)

    def convert(self, node: Node) -> None:
        x, r = node.input(0), node.input(2)
        assert x is not None and r is not None
        direction = str(node.attr("direction"))
        if direction not in _DIRECTIONS:
            raise node.fail(f"direction {direction!r} is not one of forward, reverse, bidirectional")
        if r.rank != 3:
            raise node.fail(f"R should have rank 3 (num_directions, {self.gates}*hidden_size, hidden_size); got "
                            f"{list(r.shape)}")
        hidden = int(node.attr("hidden_size")) if node.has_attr("hidden_size") else r.shape[2]
        if hidden != r.shape[2]:
            raise node.fail(f"hidden_size={hidden} but R {list(r.shape)} has hidden size {r.shape[2]}")
        clip = float(node.attr("clip")) if node.has_attr("clip") else 0.0
        if node.has_attr("clip") and not clip > 0:
            raise node.fail(f"clip={clip} must be a positive threshold")
        layout = int(node.attr("layout")) if node.version >= 14 else 0
        if layout not in (0, 1):
            raise node.fail(f"layout={layout} is not 0 or 1")
        given = {k: node.attr(k) if node.has_attr(k) else None
                 for k in ("activations", "activation_alpha", "activation_beta")}
        try:
            names, alphas, betas = canonical_activations(given["activations"], given["activation_alpha"],
                                                         given["activation_beta"], self.default_activations,
                                                         _DIRECTIONS[direction])
        except OpError as exc:
            raise node.fail(str(exc)) from None
        positions = [3 + i for i, _ in enumerate(self.optional_inputs) if node.input(3 + i) is not None]
        attrs: dict[str, Any] = {
            "direction": direction, "hidden_size": hidden, "layout": layout, "clip": clip,
            "activations": names, "activation_alpha": alphas, "activation_beta": betas,
            "optional": tuple(self.optional_inputs[i - 3] for i in positions),
        }
        for key in self.extra_attrs:
            attrs[key] = int(node.attr(key))
        self.check_extra(node, attrs)
        used = [i for i in range(min(node.num_outputs, len(OUTPUT_NAMES))) if node.output_used(i)]
        if not used:
            return  # nothing reads any output: no layer
        attrs["outputs"] = tuple(OUTPUT_NAMES[i] for i in used)
        emit_outputs(node, attrs, [0, 1, 2, *positions], used)

    def check_extra(self, node: Node, attrs: dict[str, Any]) -> None:
        """Subclasses check and canonicalize their own attributes."""


def emit_outputs(node: Node, attrs: dict[str, Any], inputs: Sequence[int], used: Sequence[int]) -> None:
    """Emit a layer computing exactly the outputs ``used`` (positions), also when they skip one (Y left unnamed,
    Y_h read: ONNX's common form)."""
    node.emit(attrs, inputs=inputs, outputs=used)

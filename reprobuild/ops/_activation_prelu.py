"""The ONNX half of :mod:`reprobuild.layers._activation_prelu` (whose docstring says what the layers compute): the ONNX
versions each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from reprobuild.layers import _activation_prelu as layer
from reprobuild.layers._activation_prelu import _broadcasts_to
from reprobuild.ops.base import Node, OpDef

#: The opset the frontend upgrades older models to (frontend.onnx_parser.MIN_OPSET; ops never import frontend).
UPGRADED_OPSET = 7


class PRelu(OpDef, layer.PRelu):
    versions = (7, 9, 16)

    def convert(self, node: Node) -> None:
        x, slope = node.input(0), node.input(1)
        assert x is not None and slope is not None
        per_channel = (node.opset == UPGRADED_OPSET and x.rank >= 3 and slope.rank == 1
                       and slope.shape[0] == x.shape[1] > 1)
        if per_channel and x.shape[-1] == x.shape[1]:
            raise node.fail(f"slope {list(slope.shape)} on input {list(x.shape)} in an opset-7 model is ambiguous: "
                            "one slope per channel (its meaning before opset 7, kept by the upgrade to opset 7) or "
                            "per element of the last axis (opset 7 broadcasting). Give the slope shape "
                            f"[{x.shape[1]}, 1, ...] (per channel) or [1, ..., {x.shape[-1]}], or use opset >= 9")
        node.emit({"per_channel": int(per_channel and not _broadcasts_to(slope.shape, x.shape))})

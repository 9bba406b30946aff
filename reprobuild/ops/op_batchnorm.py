"""The ONNX half of :mod:`reprobuild.layers.op_batchnorm` (whose docstring says what the layers compute): the ONNX
versions each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from reprobuild.layers import op_batchnorm as layer
from reprobuild.ops.attr import Attr
from reprobuild.ops.base import Node, OpDef


class BatchNormalization(OpDef, layer.BatchNormalization):
    versions = (7, 9, 14, 15)
    # The doubles 1e-5 and 0.9, not ONNX's float32 defaults widened (9.999999747378752e-06, 0.8999999761581421):
    # convert writes the default into every layer, so changing it would change each BatchNormalization layer's
    # signature and the weights the folding pass computes.
    attribute_overrides = {"epsilon": Attr("float", 1e-5), "momentum": Attr("float", 0.9)}

    def convert(self, node: Node) -> None:
        if node.version >= 14 and int(node.attr("training_mode")):
            raise node.fail("training_mode=1 is not supported; reprobuild builds inference engines")
        if node.version < 9 and int(node.attr("spatial")) != 1:
            raise node.fail("spatial=0 is not supported")
        if any(node.output_used(i) for i in range(1, node.num_outputs)):
            raise node.fail("only the first output (Y) may be used; the running mean/variance outputs are "
                            "training-only")
        node.emit({"epsilon": float(node.attr("epsilon"))}, n_outputs=1)


OPS = (BatchNormalization(),)

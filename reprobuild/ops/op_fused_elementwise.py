"""The ONNX half of :mod:`reprobuild.layers.op_fused_elementwise` (whose docstring says what the layers compute): the
ONNX versions each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from reprobuild.layers import op_fused_elementwise as layer
from reprobuild.ops.attr import Attr
from reprobuild.ops.base import OpDef


class FusedElementwise(OpDef, layer.FusedElementwise):
    versions, internal = (1,), True
    attributes = {"steps": Attr("strings")}


OPS = (FusedElementwise(),)

"""The ONNX half of :mod:`reprobuild.layers.op_fused_conv` (whose docstring says what the layers compute): the ONNX
versions each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from reprobuild.layers import op_fused_conv as layer
from reprobuild.ops.attr import Attr
from reprobuild.ops.base import OpDef
from reprobuild.ops.op_conv import Conv

#: The attributes of a fused epilogue (FusedConv, FusedGemm): the activation and Clip's bounds.
EPILOGUE_ATTRIBUTES = {
    "activation": Attr("string", ""),
    "activation_min": Attr("float", 0.0),
    "activation_max": Attr("float", 0.0),
}


class FusedConv(OpDef, layer.FusedConv):
    versions, internal = (1,), True
    attributes = {**{k: v for k, v in Conv.attributes.items() if k != "auto_pad"}, **EPILOGUE_ATTRIBUTES}


OPS = (FusedConv(),)

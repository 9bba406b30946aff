"""The ONNX half of :mod:`reprobuild.layers.op_fused_attention` (whose docstring says what the layer computes): an
internal op, made only by the ``fuse_attention`` pass, with the attributes that pin the matched form.
"""

from __future__ import annotations

from reprobuild.layers import op_fused_attention as layer
from reprobuild.ops.attr import Attr
from reprobuild.ops.base import OpDef


class FusedAttention(OpDef, layer.FusedAttention):
    versions, internal = (1,), True
    attributes = {
        "fill": Attr("float", 0.0),
        "guard": Attr("string", "none"),
        "guard_fill": Attr("float", 0.0),
        "k_transposed": Attr("int", 1),
        "masks": Attr("strings", ()),
        "scale": Attr("float", 1.0),
        "scale_on": Attr("string", "none"),
        "scale_op": Attr("string", ""),
        "softcap": Attr("float", 0.0),
        "softcap_in": Attr("float", 0.0),
        "softcap_op": Attr("string", ""),
    }


OPS = (FusedAttention(),)

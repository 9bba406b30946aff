"""The ONNX half of :mod:`reprobuild.layers.op_linalg` (whose docstring says what the layers compute): the ONNX versions
each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from reprobuild.layers import op_linalg as layer
from reprobuild.ops.base import OpDef


class Det(OpDef, layer.Det):
    versions = (11, 22)


OPS = (Det(),)

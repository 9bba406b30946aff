"""The ONNX half of :mod:`reprobuild.layers._math_pow` (whose docstring says what the layers compute): the ONNX versions
each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from reprobuild.layers import _math_pow as layer
from reprobuild.ops.base import OpDef


class Pow(OpDef, layer.Pow):
    versions = (7, 12, 13, 15)

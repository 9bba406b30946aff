"""The ONNX half of :mod:`reprobuild.layers._math_mod` (whose docstring says what the layers compute): the ONNX versions
each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from typing import Any

from reprobuild.layers import _math_mod as layer
from reprobuild.ops.base import Node, OpDef


class Mod(OpDef, layer.Mod):
    versions = (10, 13, 28)

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        fmod = int(attrs["fmod"])
        if fmod not in (0, 1):
            raise node.fail(f"fmod is {fmod}; ONNX defines 0 (the sign of the divisor, Python's %) and 1 (the sign "
                            "of the dividend, C's fmod)")
        return {"fmod": fmod}

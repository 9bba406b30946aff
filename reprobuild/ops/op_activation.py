"""The ONNX half of :mod:`reprobuild.layers.op_activation` (whose docstring says what the layers compute): the ONNX
versions each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reprobuild.layers import op_activation as layer
from reprobuild.ops._activation_clip import Clip
from reprobuild.ops._activation_prelu import PRelu
from reprobuild.ops.base import Node, OpDef


def f32(value: float) -> float:
    """A default as the float32 value ONNX stores, so that a given default and an omitted one agree."""
    return float(np.float32(value))


class _Activation(OpDef, layer._Activation):
    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        return {key: float(value) for key, value in attrs.items()}


class Relu(OpDef, layer.Relu):
    versions = (6, 13, 14)


class Celu(_Activation, layer.Celu):
    versions = (12, 28)

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        if float(attrs["alpha"]) == 0.0:
            raise node.fail("alpha = 0 divides by zero (the formula is alpha * (exp(x / alpha) - 1)); use Relu")
        return super().canonical_attrs(node, attrs)


class Elu(_Activation, layer.Elu):
    versions = (6, 22)


class Gelu(OpDef, layer.Gelu):
    versions = (20,)

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["approximate"] not in self.forms:
            raise node.fail(f"approximate is {attrs['approximate']!r}; ONNX defines 'none' and 'tanh'")
        return {"approximate": str(attrs["approximate"])}


class HardSigmoid(_Activation, layer.HardSigmoid):
    versions = (6, 22)


class HardSwish(_Activation, layer.HardSwish):
    versions = (14, 22)


class LeakyRelu(_Activation, layer.LeakyRelu):
    versions = (6, 16)


class Mish(_Activation, layer.Mish):
    versions = (18, 22)


class Selu(_Activation, layer.Selu):
    versions = (6, 22)


class Sigmoid(_Activation, layer.Sigmoid):
    versions = (6, 13)


class Softplus(_Activation, layer.Softplus):
    versions = (1, 22)


class Softsign(_Activation, layer.Softsign):
    versions = (1, 22)


class Swish(_Activation, layer.Swish):
    versions = (24,)


class ThresholdedRelu(_Activation, layer.ThresholdedRelu):
    versions = (10, 22)


class Shrink(_Activation, layer.Shrink):
    versions = (9,)


class SwiGLU(OpDef, layer.SwiGLU):
    versions = (28,)

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        return {"alpha": float(attrs["alpha"])}


OPS = (Celu(), Clip(), Elu(), Gelu(), HardSigmoid(), HardSwish(), LeakyRelu(), Mish(), PRelu(), Relu(), Selu(),
       Shrink(), Sigmoid(), Softplus(), Softsign(), SwiGLU(), Swish(), ThresholdedRelu())

"""Activations: one formula each, elementwise (Relu, Sigmoid, Elu, Gelu, ...), SwiGLU (two inputs), and in their
own modules Clip (``_activation_clip``) and PRelu (``_activation_prelu``).

Float activations compute float16 and bfloat16 in float32 and round once (``Unary``'s upcast); their float
attributes (alpha, beta, ...) are canonical with every default filled in.

ONNX subtleties:

- Gelu's canonical attribute is ``approximate``, "none" (the erf form) or "tanh"; the Gelu fusion pass builds
  layers with exactly that attribute.
- Shrink takes integer inputs too. onnxruntime computes ``x -/+ bias`` in float, truncates toward zero and wraps
  around in the integer type; here the same, exactly, in integer arithmetic.
- HardSwish is ``x * HardSigmoid(x)`` with alpha 1/6 and beta 0.5; Mish is ``x * tanh(softplus(x))``; Swish is
  ``x * sigmoid(alpha * x)``; SwiGLU is ``Swish(A) * B`` with A and B of one shape (no broadcasting).
- Versions older than opset 7 are listed only where opset 7 still resolves to them: the frontend upgrades older
  models to opset 7 first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from reprobuild.core.dtypes import FLOATS, INTEGERS, NUMERIC, SIGNED
from reprobuild.ops._activation_clip import Clip
from reprobuild.ops._activation_prelu import PRelu
from reprobuild.ops._xp import erf
from reprobuild.ops.base import Attrs, Node, OpDef, OpError, TensorType
from reprobuild.ops.families import Unary, float_compute_type


def f32(value: float) -> float:
    """A default as the float32 value ONNX stores, so that a given default and an omitted one agree."""
    return float(np.float32(value))


def sigmoid(xp: Any, x: Any) -> Any:
    """1 / (1 + e^-x), written so that no exponential overflows: e^x / (1 + e^x) for negative x."""
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


def softplus(xp: Any, x: Any) -> Any:
    """ln(1 + e^x) = max(x, 0) + ln(1 + e^-|x|), which neither overflows nor loses small values."""
    return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))


class _Activation(Unary):
    """A float activation whose attributes are all floats."""

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        return {key: float(value) for key, value in attrs.items()}


class Relu(Unary):
    op, versions, dtypes = "Relu", (6, 13, 14), (*FLOATS, *SIGNED)
    upcast = False

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.maximum(x, x.dtype.type(0))


class Celu(_Activation):
    """max(0, x) + min(0, alpha * (e^(x / alpha) - 1)); alpha = 0 divides by zero, and is refused."""

    op, versions = "Celu", (12, 28)
    version = 2

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        if float(attrs["alpha"]) == 0.0:
            raise node.fail("alpha = 0 divides by zero (the formula is alpha * (exp(x / alpha) - 1)); use Relu")
        return super().canonical_attrs(node, attrs)

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        alpha = attrs["alpha"]
        return xp.maximum(x, 0) + xp.minimum(alpha * xp.expm1(x / alpha), 0)


class Elu(_Activation):
    op, versions = "Elu", (6, 22)
    version = 2

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.where(x < 0, attrs["alpha"] * xp.expm1(x), x)


class Gelu(Unary):
    """0.5 x (1 + erf(x / sqrt 2)), or with approximate="tanh" 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))."""

    op, versions = "Gelu", (20,)
    version = 2
    forms = ("none", "tanh")

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["approximate"] not in self.forms:
            raise node.fail(f"approximate is {attrs['approximate']!r}; ONNX defines 'none' and 'tanh'")
        return {"approximate": str(attrs["approximate"])}

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        if attrs.get("approximate") not in self.forms:
            raise OpError(f"approximate is {attrs.get('approximate')!r}; it must be 'none' or 'tanh'")
        return super().infer(attrs, inputs)

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        if attrs["approximate"] == "tanh":
            return 0.5 * x * (1 + xp.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * (x * x * x))))
        return 0.5 * x * (1 + erf(xp, x * (1 / math.sqrt(2))))


class HardSigmoid(_Activation):
    op, versions = "HardSigmoid", (6, 22)
    version = 2

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.clip(attrs["alpha"] * x + attrs["beta"], 0, 1)


class HardSwish(_Activation):
    op, versions = "HardSwish", (14, 22)

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return x * xp.clip(x * (1 / 6) + 0.5, 0, 1)


class LeakyRelu(_Activation):
    op, versions = "LeakyRelu", (6, 16)
    version = 2

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.where(x < 0, attrs["alpha"] * x, x)


class Mish(_Activation):
    op, versions = "Mish", (18, 22)

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return x * xp.tanh(softplus(xp, x))


class Selu(_Activation):
    op, versions = "Selu", (6, 22)
    version = 2

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return attrs["gamma"] * xp.where(x > 0, x, attrs["alpha"] * xp.expm1(x))


class Sigmoid(_Activation):
    op, versions = "Sigmoid", (6, 13)

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return sigmoid(xp, x)


class Softplus(_Activation):
    op, versions = "Softplus", (1, 22)

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return softplus(xp, x)


class Softsign(_Activation):
    op, versions = "Softsign", (1, 22)

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return x / (1 + xp.abs(x))


class Swish(_Activation):
    op, versions = "Swish", (24,)
    version = 2

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return x * sigmoid(xp, attrs["alpha"] * x)


class ThresholdedRelu(_Activation):
    op, versions = "ThresholdedRelu", (10, 22)
    version = 2

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.where(x > attrs["alpha"], x, xp.zeros_like(x))


class Shrink(_Activation):
    """x + bias below -lambd, x - bias above lambd, 0 between; integers too (see the module docstring)."""

    op, versions, dtypes = "Shrink", (9,), NUMERIC
    version = 2

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        if inputs and inputs[0].dtype in INTEGERS:
            for key in ("bias", "lambd"):
                if not abs(attrs[key]) < 2.0**53:
                    raise OpError(f"{key} = {attrs[key]} on {inputs[0].dtype} input: integer Shrink needs "
                                  "finite bias and lambd of magnitude below 2**53")
        return super().infer(attrs, inputs)

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        lambd, bias = attrs["lambd"], attrs["bias"]
        if x.dtype.kind in "iu":
            below, above = _shifted_integers(xp, x, bias)
            xf = x.astype(xp.float64)  # exact comparisons while |lambd| < 2**53 (infer checks)
        else:
            below, above, xf = x + bias, x - bias, x
        return xp.where(xf < -lambd, below, xp.where(xf > lambd, above, xp.zeros_like(x)))


def _shifted_integers(xp: Any, x: Any, bias: float) -> tuple[Any, Any]:
    """trunc(x + bias) and trunc(x - bias) for integer x, wrapping around in x's type.

    With bias = whole + fraction (0 <= fraction < 1): x - bias truncates to x - whole, less one where it is
    positive and fraction > 0; x + bias truncates to x + whole, plus one where it is negative and fraction > 0."""
    whole = math.floor(bias)
    bits = 8 * x.dtype.itemsize
    wrapped = whole % (1 << bits)
    if x.dtype.kind == "i" and wrapped >= 1 << (bits - 1):
        wrapped -= 1 << bits
    shift, one = x.dtype.type(wrapped), x.dtype.type(1)
    below, above = x + shift, x - shift
    if bias != whole:
        xf = x.astype(xp.float64)
        below = xp.where(xf < -bias, below + one, below)
        above = xp.where(xf > bias, above - one, above)
    return below, above


class SwiGLU(OpDef):
    """Swish(A) * B = A * sigmoid(alpha * A) * B, for A and B of one shape."""

    op, versions = "SwiGLU", (28,)
    version = 2
    num_inputs = (2, 2)
    dtypes = FLOATS
    same_type = (1,)

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        return {"alpha": float(attrs["alpha"])}

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        if inputs[0].shape != inputs[1].shape:
            raise OpError(f"A {list(inputs[0].shape)} and B {list(inputs[1].shape)} must have the same shape; "
                          "SwiGLU does not broadcast")
        return [inputs[0]]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        a, b = inputs
        work = float_compute_type(xp, a)
        aw, bw = a.astype(work, copy=False), b.astype(work, copy=False)
        return [(aw * sigmoid(xp, attrs["alpha"] * aw) * bw).astype(a.dtype, copy=False)]


OPS = (Celu(), Clip(), Elu(), Gelu(), HardSigmoid(), HardSwish(), LeakyRelu(), Mish(), PRelu(), Relu(), Selu(),
       Shrink(), Sigmoid(), Softplus(), Softsign(), SwiGLU(), Swish(), ThresholdedRelu())

"""Activations: one formula each, elementwise (Relu, Sigmoid, Elu, Gelu, ...), SwiGLU (two inputs), and in their
own modules Clip (``_activation_clip``) and PRelu (``_activation_prelu``).

Float activations compute float16 and bfloat16 in float32 and round once (``Unary``'s upcast); their float
attributes (alpha, beta, ...) are canonical with every default filled in. Relu, Elu, Gelu, HardSigmoid, HardSwish,
LeakyRelu, Sigmoid and Softplus (and Clip) compute their formula from the table in ``reprobuild.layers.formulas``,
the one the generated kernels' C is written from; Mish, Swish and SwiGLU use its Softplus and Sigmoid.

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

from reprobuild.core.dtypes import FLOATS, INTEGERS, NUMERIC, SIGNED
from reprobuild.layers._activation_clip import Clip
from reprobuild.layers._activation_prelu import PRelu
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType
from reprobuild.layers.families import Unary, float_compute_type
from reprobuild.layers.formulas import evaluate


class _Activation(Unary):
    """A float activation whose attributes are all floats."""


class Relu(Unary):
    op, dtypes = "Relu", (*FLOATS, *SIGNED)
    version = 2  # 2: computes through the formula table (layers/formulas.py); the same bits
    upcast = False

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return evaluate(xp, "Relu", [x], attrs)


class Celu(_Activation):
    """max(0, x) + min(0, alpha * (e^(x / alpha) - 1)); alpha = 0 divides by zero, and is refused."""

    op = "Celu"
    version = 2

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        alpha = attrs["alpha"]
        return xp.maximum(x, 0) + xp.minimum(alpha * xp.expm1(x / alpha), 0)


class Elu(_Activation):
    op = "Elu"
    version = 3  # 3: computes through the formula table (layers/formulas.py); the same bits

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return evaluate(xp, "Elu", [x], attrs)


class Gelu(Unary):
    """0.5 x (1 + erf(x / sqrt 2)), or with approximate="tanh" 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))."""

    op = "Gelu"
    version = 3  # 3: computes through the formula table (layers/formulas.py); the same bits
    forms = ("none", "tanh")

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        if attrs.get("approximate") not in self.forms:
            raise OpError(f"approximate is {attrs.get('approximate')!r}; it must be 'none' or 'tanh'")
        return super().infer(attrs, inputs)

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return evaluate(xp, "Gelu", [x], attrs)


class HardSigmoid(_Activation):
    op = "HardSigmoid"
    version = 3  # 3: computes through the formula table (layers/formulas.py); the same bits

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return evaluate(xp, "HardSigmoid", [x], attrs)


class HardSwish(_Activation):
    op = "HardSwish"
    version = 2  # 2: computes through the formula table (layers/formulas.py); the same bits

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return evaluate(xp, "HardSwish", [x], attrs)


class LeakyRelu(_Activation):
    op = "LeakyRelu"
    version = 3  # 3: computes through the formula table (layers/formulas.py); the same bits

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return evaluate(xp, "LeakyRelu", [x], attrs)


class Mish(_Activation):
    op = "Mish"
    version = 2  # 2: computes through the formula table (layers/formulas.py); the same bits

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return x * xp.tanh(evaluate(xp, "Softplus", [x], {}))


class Selu(_Activation):
    op = "Selu"
    version = 2

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return attrs["gamma"] * xp.where(x > 0, x, attrs["alpha"] * xp.expm1(x))


class Sigmoid(_Activation):
    op = "Sigmoid"
    version = 2  # 2: computes through the formula table (layers/formulas.py); the same bits

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return evaluate(xp, "Sigmoid", [x], attrs)


class Softplus(_Activation):
    op = "Softplus"
    version = 2  # 2: computes through the formula table (layers/formulas.py); the same bits

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return evaluate(xp, "Softplus", [x], attrs)


class Softsign(_Activation):
    op = "Softsign"

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return x / (1 + xp.abs(x))


class Swish(_Activation):
    op = "Swish"
    version = 3  # 3: computes through the formula table (layers/formulas.py); the same bits

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return x * evaluate(xp, "Sigmoid", [attrs["alpha"] * x], {})


class ThresholdedRelu(_Activation):
    op = "ThresholdedRelu"
    version = 2

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.where(x > attrs["alpha"], x, xp.zeros_like(x))


class Shrink(_Activation):
    """x + bias below -lambd, x - bias above lambd, 0 between; integers too (see the module docstring)."""

    op, dtypes = "Shrink", NUMERIC
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


class SwiGLU(LayerDef):
    """Swish(A) * B = A * sigmoid(alpha * A) * B, for A and B of one shape."""

    op = "SwiGLU"
    version = 3  # 3: computes through the formula table (layers/formulas.py); the same bits
    num_inputs = (2, 2)
    dtypes = FLOATS
    same_type = (1,)

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
        return [(aw * evaluate(xp, "Sigmoid", [attrs["alpha"] * aw], {}) * bw).astype(a.dtype, copy=False)]


LAYERS = (Celu(), Clip(), Elu(), Gelu(), HardSigmoid(), HardSwish(), LeakyRelu(), Mish(), PRelu(), Relu(), Selu(),
          Shrink(), Sigmoid(), Softplus(), Softsign(), SwiGLU(), Swish(), ThresholdedRelu())

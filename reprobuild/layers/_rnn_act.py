"""The activation functions RNN, GRU and LSTM accept, and how their ``activations``, ``activation_alpha`` and
``activation_beta`` attributes become one canonical, complete list.

ONNX lists the activations per direction (forward first): RNN takes one (f), GRU two (f, g), LSTM three
(f, g, h). Names are matched case-insensitively, as onnxruntime does. The alpha and beta values are "consumed in
the order of the activation functions": each activation that has an alpha (or beta) takes the next value, the
others take none, and an activation left without a value uses the default of the ONNX op of that name. That is
onnxruntime's reading; a list with more values than the activations can take is ambiguous (it may mean one value
per activation, by position) and is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reprobuild.layers.base import OpError

#: canonical name -> (takes alpha, takes beta, default alpha, default beta). None: the value must be given, because
#: the defaults disagree (ONNX points to the ops' defaults: ThresholdedRelu's alpha is 1.0, and the experimental
#: Affine and ScaledTanh had none; onnxruntime uses others).
ACTIVATIONS: dict[str, tuple[bool, bool, float | None, float | None]] = {
    "Affine": (True, True, None, None),
    "Elu": (True, False, 1.0, None),
    "HardSigmoid": (True, True, 0.2, 0.5),
    "LeakyRelu": (True, False, 0.01, None),
    "Relu": (False, False, None, None),
    "ScaledTanh": (True, True, None, None),
    "Sigmoid": (False, False, None, None),
    "Softplus": (False, False, None, None),
    "Softsign": (False, False, None, None),
    "Tanh": (False, False, None, None),
    "ThresholdedRelu": (True, False, None, None),
}


def activation(xp: Any, name: str, alpha: float, beta: float) -> Callable[[Any], Any]:
    """The function, elementwise on arrays of the compute dtype (float32 or float64)."""
    if name == "Tanh":
        return xp.tanh
    if name == "Sigmoid":
        return lambda x: 1 / (1 + xp.exp(-x))
    if name == "Relu":
        return lambda x: xp.maximum(x, 0)
    if name == "Affine":
        return lambda x: x * alpha + beta
    if name == "LeakyRelu":
        return lambda x: xp.where(x >= 0, x, x * alpha)
    if name == "ThresholdedRelu":
        return lambda x: xp.where(x > alpha, x, 0).astype(x.dtype)
    if name == "ScaledTanh":
        return lambda x: xp.tanh(x * beta) * alpha
    if name == "HardSigmoid":
        return lambda x: xp.clip(x * alpha + beta, 0, 1)
    if name == "Elu":
        return lambda x: xp.where(x >= 0, x, (xp.exp(x) - 1) * alpha)
    if name == "Softsign":
        return lambda x: x / (1 + xp.abs(x))
    if name == "Softplus":
        return lambda x: xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))
    raise OpError(f"activation {name!r} is not implemented")

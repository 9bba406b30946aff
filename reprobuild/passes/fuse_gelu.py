"""Recognise Gelu written out in elementary ops (how exporters without a Gelu op write it) and make it one Gelu
layer: 0.5 * x * (1 + erf(x / sqrt(2))) exactly, and 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3))) as
``approximate="tanh"``.
"""

from __future__ import annotations

import math

from reprobuild.ir import Layer, Network
from reprobuild.passes.pattern import Const, GraphIndex, Match, Op, Var, rewrite

VERSION = 1

_X = Var("x")
_ERF = (Op("Erf", Op("Div", _X, Const(math.sqrt(2.0)))), Op("Erf", Op("Mul", _X, Const(1.0 / math.sqrt(2.0)))))
_TANH = (Op("Tanh", Op("Mul", Op("Add", _X, Op("Mul", Op("Pow", _X, Const(3.0)), Const(0.044715))),
                       Const(math.sqrt(2.0 / math.pi)))),)


def _forms(inner: Op) -> list[Op]:
    """The three ways to multiply x, 0.5 and (1 + inner)."""
    h = Op("Add", inner, Const(1.0))
    return [Op("Mul", Op("Mul", _X, h), Const(0.5)), Op("Mul", Op("Mul", _X, Const(0.5)), h),
            Op("Mul", _X, Op("Mul", h, Const(0.5)))]


PATTERNS = [(p, "none") for e in _ERF for p in _forms(e)] + [(p, "tanh") for e in _TANH for p in _forms(e)]


def fuse_gelu(network: Network) -> Network:
    for pattern, approximate in PATTERNS:
        def build(m: Match, index: GraphIndex, approximate: str = approximate) -> Layer | None:
            root = m.layers[-1]
            x = m.vars["x"]
            if index.tensor(x).dtype not in ("float16", "bfloat16", "float32", "float64"):
                return None
            return Layer(root.name, "Gelu", (x,), root.outputs, (("approximate", approximate),))

        network = rewrite(network, pattern, build)
    return network

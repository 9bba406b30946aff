"""Recognise layer normalization written out in elementary ops and make it one LayerNormalization layer:

    d = x - ReduceMean(x, trailing axes);  y = d / sqrt(ReduceMean(d ** 2, same axes) + eps) * gamma + beta
"""

from __future__ import annotations

from reprobuild.ir import Layer, Network
from reprobuild.passes.pattern import Const, GraphIndex, Match, Op, Var, rewrite

VERSION = 1

_D = Op("Sub", Var("x"), Op("ReduceMean", Var("x"), name="mean"), name="d")
_SQUARES = (Op("Pow", _D, Const(2.0)), Op("Mul", _D, _D))
PATTERNS = [
    Op("Add", Op("Mul", Op("Div", _D, Op("Sqrt", Op("Add", Op("ReduceMean", sq, name="var"), Const(name="eps")))),
                 Var("gamma")), Var("beta"))
    for sq in _SQUARES
]


def _build(m: Match, index: GraphIndex) -> Layer | None:
    root = m.layers[-1]
    x = index.tensor(m.vars["x"])
    mean, var = m.named["mean"], m.named["var"]
    axes = tuple(mean.attr("axes", ()))
    rank = len(x.shape)
    if (not axes or axes != tuple(range(rank - len(axes), rank)) or tuple(var.attr("axes", ())) != axes
            or not mean.attr("keepdims") or not var.attr("keepdims")):
        return None
    if x.dtype not in ("float16", "bfloat16", "float32", "float64"):
        return None
    normalized = x.shape[axes[0]:]
    for name in ("gamma", "beta"):  # the op takes them with exactly the normalized shape
        t = index.tensor(m.vars[name])
        if tuple(t.shape) != normalized or t.dtype != x.dtype:
            return None
    eps = m.consts["eps"]
    if eps.size != 1:
        return None
    attrs = (("axis", axes[0]), ("epsilon", float(eps.reshape(-1)[0])), ("stash_type", 1))
    return Layer(root.name, "LayerNormalization", (m.vars["x"], m.vars["gamma"], m.vars["beta"]), root.outputs,
                 attrs)


def fuse_layer_normalization(network: Network) -> Network:
    for pattern in PATTERNS:
        network = rewrite(network, pattern, _build)
    return network

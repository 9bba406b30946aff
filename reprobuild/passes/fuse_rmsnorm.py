"""Recognise root-mean-square normalization written out in elementary ops (how exporters write Llama's, T5's and
Mistral's RMSNorm) and make it one RMSNormalization layer::

    h = Cast(x, float32)                     (absent for a float32 model: eliminate_identities removed it)
    y = h * Reciprocal(Sqrt(ReduceMean(h ** 2, trailing axes) + eps))
        (or h / Sqrt(...), or h * Pow(... + eps, -0.5); the square also as Mul(h, h))
    out = weight * Cast(y, x's type)         (the Cast absent when h is x; either operand order)

The weight must have exactly the normalized (trailing) shape and x's type, a constant or a run-time tensor; eps a
constant scalar; the ReduceMean keeps its dimensions. A chain with no weight Mul after it (the normalization
alone) becomes RMSNormalization with a scale of ones, which is exact (y * 1 == y bit for bit). Weighted chains are
fused first, so a weight Mul is never left outside a fused layer that could have taken it.

Numerics: the layer computes in float32 (``stash_type`` 1; float64 where h is float64, as ONNX's op does) and
rounds once to x's type, so in float32 it matches the unfused chain bit for bit in the Div form (same square,
mean, sqrt and division) and within float32 rounding in the Reciprocal and Pow(-0.5) forms; for half inputs it
rounds once where the unfused chain rounds y before the weight Mul: within half tolerance, and more accurate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from reprobuild.core.dtypes import np_dtype
from reprobuild.ir import Layer, Network
from reprobuild.passes.pattern import Const, GraphIndex, Match, Op, Var, fresh_name, fuse_rounds, match

VERSION = 1

FLOAT_TYPES = ("float16", "bfloat16", "float32", "float64")


def _norm_forms(h: Var | Op) -> list[Op]:
    """y = h / sqrt(mean(h^2) + eps), in each way exporters write it."""
    forms = []
    for square in (Op("Pow", h, Const(2.0, rtol=0.0)), Op("Mul", h, h)):
        ve = Op("Add", Op("ReduceMean", square, name="mean"), Const(name="eps"))
        forms += [Op("Mul", h, Op("Reciprocal", Op("Sqrt", ve))), Op("Div", h, Op("Sqrt", ve)),
                  Op("Mul", h, Op("Pow", ve, Const(-0.5, rtol=0.0)))]
    return forms


#: y, with h the input itself or a Cast of it (the Cast named, so both of its readers must be the same layer).
_NORMS = _norm_forms(Var("x")) + _norm_forms(Op("Cast", Var("x"), name="upcast"))
#: the normalization alone, then y cast back to x's type
_BARE = _NORMS + [Op("Cast", y, name="downcast") for y in _NORMS]
#: weight * y (Mul tries both operand orders)
_WEIGHTED = [Op("Mul", Var("weight"), y) for y in _BARE]


def _fusion(patterns: Sequence[Op], weighted: bool):  # type: ignore[no-untyped-def]
    def fuse(network: Network, index: GraphIndex,
             root: Layer) -> tuple[Sequence[Layer], Layer, Mapping[str, np.ndarray]] | None:
        for pattern in patterns:
            m = match(pattern, root.outputs[0], index)
            if m is not None:
                found = _build(m, index, root, weighted)
                if found is not None:
                    return found
        return None

    return fuse


def _build(m: Match, index: GraphIndex, root: Layer,
           weighted: bool) -> tuple[Sequence[Layer], Layer, Mapping[str, np.ndarray]] | None:
    x = index.tensor(m.vars["x"])
    out = index.tensor(root.outputs[0])
    upcast, mean = m.named.get("upcast"), m.named["mean"]
    h = index.tensor(upcast.outputs[0]) if upcast is not None else x
    if x.dtype not in FLOAT_TYPES or h.dtype not in FLOAT_TYPES or out.dtype != x.dtype:
        return None  # RMSNormalization gives x's type back: a chain that ends in another type stays
    if upcast is not None and h.dtype not in ("float32", "float64"):
        return None  # a Cast down to half precision before the statistics is not what the op computes
    axes, rank = tuple(mean.attr("axes", ())), len(x.shape)
    if not axes or axes != tuple(range(rank - len(axes), rank)) or not mean.attr("keepdims"):
        return None
    eps = m.consts["eps"]
    if eps.size != 1:
        return None
    normalized = tuple(x.shape[axes[0]:])
    constants: dict[str, np.ndarray] = {}
    if weighted:
        weight = m.vars["weight"]
        w = index.tensor(weight)
        if tuple(w.shape) != normalized or w.dtype != x.dtype:
            return None
    else:
        if any(not isinstance(d, int) for d in normalized):
            return None  # a ones scale needs the normalized shape known at build time
        weight = fresh_name(index, root.name + ":scale")
        constants[weight] = np.ones(normalized, dtype=np_dtype(x.dtype))
    stash_type = 11 if h.dtype == "float64" else 1
    attrs = (("axis", axes[0]), ("epsilon", float(eps.reshape(-1)[0])), ("stash_type", stash_type))
    return m.layers, Layer(root.name, "RMSNormalization", (m.vars["x"], weight), root.outputs, attrs), constants


def fuse_rms_normalization(network: Network) -> Network:
    network = fuse_rounds(network, {"Mul": _fusion(_WEIGHTED, True)})
    return fuse_rounds(network, {op: _fusion(_BARE, False) for op in ("Mul", "Div", "Cast")})

"""Fold an inference BatchNormalization into the Conv or Gemm that feeds it.

y = BN(Conv(x, W, b)) = Conv(x, W * s, (b - mean) * s + beta) with s = scale / sqrt(var + eps) per output
channel; for Gemm the channels are the columns of the product. The new weights are computed in float64 and
rounded once to the weight's dtype. Only when the weights and every BN parameter are constants, and the product
feeds nothing but the BN.
"""

from __future__ import annotations

import numpy as np

from reprobuild.ir import Layer, Network
from reprobuild.passes.pattern import Claims, GraphIndex, fresh_name, replace_all

VERSION = 1


def _scale_shift(index: GraphIndex, bn: Layer) -> tuple[np.ndarray, np.ndarray] | None:
    params = [index.const(t) for t in bn.inputs[1:5]]
    if any(p is None for p in params):
        return None
    scale, bias, mean, var = (np.asarray(p, dtype=np.float64) for p in params)
    s = scale / np.sqrt(var + float(bn.attr("epsilon")))
    return s, bias - mean * s


def _fold_conv(index: GraphIndex, conv: Layer, s: np.ndarray, t: np.ndarray) -> tuple[Layer, dict] | None:
    w = index.const(conv.inputs[1])
    b = index.const(conv.inputs[2]) if len(conv.inputs) > 2 else np.zeros(s.shape, dtype=np.float64)
    if w is None or b is None:
        return None
    shape = (-1,) + (1,) * (w.ndim - 1)
    new_w = (w.astype(np.float64) * s.reshape(shape)).astype(w.dtype)
    new_b = (b.astype(np.float64) * s + t).astype(w.dtype)
    names = fresh_name(index, conv.inputs[1] + ":bn"), fresh_name(index, conv.name + ":bn_bias")
    layer = Layer(conv.name, "Conv", (conv.inputs[0], *names), conv.outputs, conv.attrs, conv.origin)
    return layer, dict(zip(names, (new_w, new_b)))


def _fold_gemm(index: GraphIndex, gemm: Layer, s: np.ndarray, t: np.ndarray) -> tuple[Layer, dict] | None:
    b = index.const(gemm.inputs[1])
    if b is None:
        return None
    n = s.shape[0]
    beta = float(gemm.attr("beta"))
    c = index.const(gemm.inputs[2]) if len(gemm.inputs) > 2 else np.zeros((n,), dtype=np.float64)
    if c is None:
        return None
    m = index.tensor(gemm.outputs[0]).shape[0]
    c_full = np.broadcast_to(c.astype(np.float64) * (beta if len(gemm.inputs) > 2 else 1.0), (m, n))
    new_c = c_full * s + t
    if np.all(new_c == new_c[:1]):
        new_c = new_c[0]
    new_b = (b.astype(np.float64) * (s.reshape(-1, 1) if gemm.attr("transB") else s)).astype(b.dtype)
    names = fresh_name(index, gemm.inputs[1] + ":bn"), fresh_name(index, gemm.name + ":bn_bias")
    attrs = tuple((k, 1.0 if k == "beta" else v) for k, v in gemm.attrs)
    layer = Layer(gemm.name, "Gemm", (gemm.inputs[0], *names), gemm.outputs, attrs, gemm.origin)
    return layer, dict(zip(names, (new_b, new_c.astype(b.dtype))))


def fold_batchnorm(network: Network) -> Network:
    """Every foldable BatchNormalization folded, all of a round at once (a BN after a folded one, the next round)."""
    while True:
        index, claims = GraphIndex(network), Claims()
        for bn in network.layers:
            if bn.op != "BatchNormalization":
                continue
            producer = index.producer(bn.inputs[0])
            if producer is None or producer.op not in ("Conv", "Gemm") or not index.single_use(bn.inputs[0]):
                continue
            params = _scale_shift(index, bn)
            if params is None or claims.overlaps([producer, bn]):
                continue
            folded = (_fold_conv if producer.op == "Conv" else _fold_gemm)(index, producer, *params)
            if folded is None:
                continue
            layer, constants = folded
            merged = Layer(layer.name, layer.op, layer.inputs, bn.outputs, layer.attrs,
                           tuple(dict.fromkeys((*producer.origin, *bn.origin))))
            claims.add([producer, bn], merged, constants)
        if not claims.replacements:
            return network
        network = replace_all(network, claims.replacements)

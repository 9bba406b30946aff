"""Recurrent layers: RNN, GRU, LSTM (opsets 7, 14 and 22), every direction, activation and optional input.

The shared conversion, shape rules and time loop live in ``_rnn_common``; each class here is one cell's step
equations, with ONNX's gate orders: GRU's W, R and B hold (z, r, h), LSTM's (i, o, f, c) and its peepholes P
(i, o, f). ONNX subtleties:

- ``clip`` bounds the input of every gate activation (f and g), after the peephole term, and not the cell state
  that LSTM's h reads (onnxruntime's placement).
- GRU ``linear_before_reset`` applies the reset gate after the recurrent product (and its bias) instead of
  before it.
- LSTM ``input_forget`` couples the gates: f = 1 - i.
- float16 and bfloat16 are computed in float32 and rounded once; float64 in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reprobuild.layers._rnn_common import Recurrent, apply
from reprobuild.layers.base import Attrs

Acts = list[list[Callable[[Any], Any]]]


class RNN(Recurrent):
    """H = f(X W^T + H R^T + Wb + Rb)."""

    op = "RNN"
    version = 2
    num_inputs = (3, 6)
    num_outputs = (1, 2)
    gates = 1
    default_activations = ("Tanh",)

    def step(self, xp: Any, xw: Any, h: Any, c: Any, r_t: Any, rb: Any, attrs: Attrs, acts: Acts,
             given: dict[str, Any]) -> tuple[Any, Any]:
        return apply(xp, acts[0], xw + xp.matmul(h, r_t) + rb, attrs["clip"]), None


class GRU(Recurrent):
    """z, r = f(...); h~ = g(X Wh^T + (r * H) Rh^T + Rbh + Wbh) (or r * (H Rh^T + Rbh) with
    linear_before_reset); H = (1 - z) * h~ + z * H."""

    op = "GRU"
    version = 2
    num_inputs = (3, 6)
    num_outputs = (1, 2)
    gates = 3
    default_activations = ("Sigmoid", "Tanh")
    extra_attrs = ("linear_before_reset",)

    def step(self, xp: Any, xw: Any, h: Any, c: Any, r_t: Any, rb: Any, attrs: Attrs, acts: Acts,
             given: dict[str, Any]) -> tuple[Any, Any]:
        n, clip = h.shape[-1], attrs["clip"]
        zr = xw[..., : 2 * n] + xp.matmul(h, r_t[..., : 2 * n]) + rb[..., : 2 * n]
        z = apply(xp, acts[0], zr[..., :n], clip)
        r = apply(xp, acts[0], zr[..., n:], clip)
        rh, rbh = r_t[..., 2 * n:], rb[..., 2 * n:]
        if attrs["linear_before_reset"]:
            pre = xw[..., 2 * n:] + r * (xp.matmul(h, rh) + rbh)
        else:
            pre = xw[..., 2 * n:] + xp.matmul(r * h, rh) + rbh
        candidate = apply(xp, acts[1], pre, clip)
        return (1 - z) * candidate + z * h, None


class LSTM(Recurrent):
    """i, f = f(... + P * C), c~ = g(...), C = f * C + i * c~, o = f(... + Po * C), H = o * h(C)."""

    op = "LSTM"
    version = 2
    num_inputs = (3, 8)
    num_outputs = (1, 3)
    gates = 4
    default_activations = ("Sigmoid", "Tanh", "Tanh")
    optional_inputs = ("B", "sequence_lens", "initial_h", "initial_c", "P")
    extra_attrs = ("input_forget",)

    def step(self, xp: Any, xw: Any, h: Any, c: Any, r_t: Any, rb: Any, attrs: Attrs, acts: Acts,
             given: dict[str, Any]) -> tuple[Any, Any]:
        n, clip = h.shape[-1], attrs["clip"]
        g = xw + xp.matmul(h, r_t) + rb
        gi, go, gf, gc = g[..., :n], g[..., n: 2 * n], g[..., 2 * n: 3 * n], g[..., 3 * n:]
        p = given.get("P")
        pi, po, pf = (None, None, None) if p is None else (p[:, None, :n], p[:, None, n: 2 * n], p[:, None, 2 * n:])
        i = apply(xp, acts[0], gi if pi is None else gi + pi * c, clip)
        f = 1 - i if attrs["input_forget"] else apply(xp, acts[0], gf if pf is None else gf + pf * c, clip)
        c_new = f * c + i * apply(xp, acts[1], gc, clip)
        o = apply(xp, acts[0], go if po is None else go + po * c_new, clip)
        return o * apply(xp, acts[2], c_new, 0.0), c_new


LAYERS = (GRU(), LSTM(), RNN())

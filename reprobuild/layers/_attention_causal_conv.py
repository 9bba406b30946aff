"""CausalConvWithState (opset 27): a depthwise causal 1-D convolution (Mamba, Gated DeltaNet) whose left context
is the carried ``past_state`` (zeros without one), with an optional fused SiLU; ``present_state`` is the last
k-1 positions of the state-and-input sequence, the next step's ``past_state``.

Canonical attributes: ``activation`` ("none" or "silu"; "swish" is its alias) and ``roles`` (which of input,
weight, bias, past_state are inputs). As in the reference, the taps are summed in float32 and rounded to the
input type, the bias added in that type, and the SiLU computed in float32 from the rounded sum.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reprobuild.layers._attention_round import rounder, work_dtype
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType

ROLES = ("input", "weight", "bias", "past_state")


class CausalConvWithState(LayerDef):
    op = "CausalConvWithState"
    version = 2
    num_inputs = (2, 4)
    num_outputs = (1, 2)
    dtypes = ("float16", "bfloat16", "float32")
    same_type = (1, 2, 3)

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        t = dict(zip(attrs["roles"], inputs))
        self.check_types([t[r] for r in ROLES if r in t])
        x, w = t["input"], t["weight"]
        if x.rank != 3 or w.rank != 3 or w.shape[:2] != (x.shape[1], 1) or w.shape[2] < 1:
            raise OpError(f"input must be (batch, channels, length) and weight (channels, 1, k); they are "
                          f"{list(x.shape)} and {list(w.shape)}")
        batch, channels, _ = x.shape
        state = (batch, channels, w.shape[2] - 1)
        if "bias" in t and t["bias"].shape != (channels,):
            raise OpError(f"bias has shape {list(t['bias'].shape)}, expected [{channels}]")
        if "past_state" in t and t["past_state"].shape != state:
            raise OpError(f"past_state has shape {list(t['past_state'].shape)}, expected {list(state)} "
                          "(batch, channels, k - 1)")
        return [x, TensorType(state, x.dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        t = dict(zip(attrs["roles"], inputs))
        x, w = t["input"], t["weight"]
        dtype = str(x.dtype)
        work, rnd = work_dtype(dtype), rounder(xp, dtype)
        batch, channels, length = x.shape
        k = w.shape[2]
        past = t["past_state"] if "past_state" in t else xp.zeros((batch, channels, k - 1), dtype=x.dtype)
        seq = xp.concatenate([past, x], axis=2)
        src, taps = seq.astype(work), w.astype(work)[:, 0, :]
        acc = xp.zeros((batch, channels, length), dtype=work)
        for j in range(k):
            acc = acc + taps[None, :, j:j + 1] * src[:, :, j:j + length]
        y = rnd(acc)
        if "bias" in t:
            y = rnd(y + t["bias"].astype(work)[None, :, None])
        if attrs["activation"] == "silu":
            y32 = y.astype(xp.float32)
            sigmoid = 1 / (1 + xp.exp(-y32))
            y = rnd((y32 * sigmoid).astype(work))
        return [y.astype(x.dtype), seq[:, :, seq.shape[2] - (k - 1):]]

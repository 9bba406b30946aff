"""LinearAttention (opset 27): the recurrent "linear attention" family (linear, gated / GLA, delta / DeltaNet,
gated_delta / Gated DeltaNet) over packed 3-D (batch, seq, heads*size) inputs, with a (batch, kv_heads, d_k,
d_v) state carried in and out.

Canonical attributes: ``q_num_heads``, ``kv_num_heads``, ``scale`` (``1/sqrt(d_k)`` filled in for 0),
``update_rule``, and ``roles`` (which of query, key, value, past_state, decay, beta are inputs). ``chunk_size``
is a tuning hint that does not change the result, so it is dropped.

The result is the token-by-token recurrence of the spec, computed in float32 whatever the input type (as the
reference does) and rounded once: one vectorized step per token, so the step order, and with it every rounding,
is fixed. The output has the query's type; ``present_state`` has ``past_state``'s type, or the query's without
one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType

TYPES = ("float16", "bfloat16", "float32")


class LinearAttention(LayerDef):
    op = "LinearAttention"
    version = 2
    num_inputs = (3, 6)
    num_outputs = (1, 2)
    dtypes = TYPES
    same_type = (1, 2)

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        t = dict(zip(attrs["roles"], inputs))
        q, k, v = t["query"], t["key"], t["value"]
        q_heads, kv_heads = int(attrs["q_num_heads"]), int(attrs["kv_num_heads"])
        if q.rank != 3 or k.rank != 3 or v.rank != 3:
            raise OpError(f"query {list(q.shape)}, key {list(k.shape)} and value {list(v.shape)} must be 3-D")
        batch, seq = q.shape[:2]
        d_k = q.shape[2] // q_heads
        if q.shape[2] % q_heads or v.shape[2] % kv_heads or d_k < 1:
            raise OpError(f"query {list(q.shape)} and value {list(v.shape)} must split into {q_heads} and "
                          f"{kv_heads} heads")
        d_v = v.shape[2] // kv_heads
        if k.shape != (batch, seq, kv_heads * d_k) or v.shape[:2] != (batch, seq):
            raise OpError(f"key {list(k.shape)} must be [{batch}, {seq}, {kv_heads * d_k}] and value "
                          f"{list(v.shape)} [{batch}, {seq}, {kv_heads}*d_v]")
        state = (batch, kv_heads, d_k, d_v)
        state_type = q.dtype
        if "past_state" in t:
            past = t["past_state"]
            if past.shape != state or past.dtype not in TYPES:
                raise OpError(f"past_state must be {list(state)} of a float type; it is {past.dtype} "
                              f"{list(past.shape)}")
            state_type = past.dtype
        for role, lasts in (("decay", (kv_heads, kv_heads * d_k)), ("beta", (kv_heads, 1))):
            if role in t:
                x = t[role]
                if x.dtype != q.dtype or x.rank != 3 or x.shape[:2] != (batch, seq) or x.shape[2] not in lasts:
                    raise OpError(f"{role} must be {q.dtype} [{batch}, {seq}, one of {list(lasts)}]; it is "
                                  f"{x.dtype} {list(x.shape)}")
        return [TensorType((batch, seq, q_heads * d_v), q.dtype), TensorType(state, state_type)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        t = dict(zip(attrs["roles"], inputs))
        q_heads, kv_heads = int(attrs["q_num_heads"]), int(attrs["kv_num_heads"])
        rule = str(attrs["update_rule"])
        q, k, v = (_unpack(xp, t[r], h) for r, h in (("query", q_heads), ("key", kv_heads), ("value", kv_heads)))
        batch, _, seq, d_k = k.shape
        d_v = v.shape[3]
        decay = _unpack(xp, t["decay"], kv_heads if t["decay"].shape[2] != kv_heads else None) \
            if "decay" in t else None
        beta = _unpack(xp, t["beta"], None) if "beta" in t else None
        state_type = t["past_state"].dtype if "past_state" in t else t["query"].dtype
        state = t["past_state"].astype(xp.float32) if "past_state" in t else \
            xp.zeros((batch, kv_heads, d_k, d_v), dtype=xp.float32)
        group = q_heads // kv_heads
        scale = float(attrs["scale"])
        steps = []
        for i in range(seq):
            k_t, v_t = k[:, :, i, :], v[:, :, i, :]
            if decay is not None:
                state = state * xp.exp(decay[:, :, i, :])[..., None]
            if rule in ("delta", "gated_delta"):
                assert beta is not None
                retrieved = xp.matmul(k_t[:, :, None, :], state)[:, :, 0, :]
                v_t = beta[:, :, i, :] * (v_t - retrieved)
            state = state + k_t[..., :, None] * v_t[..., None, :]
            read = xp.repeat(state, group, axis=1) if group > 1 else state
            steps.append(scale * xp.matmul(q[:, :, i, None, :], read)[:, :, 0, :])
        out = xp.stack(steps, axis=2)  # (batch, q_heads, seq, d_v)
        out = out.transpose(0, 2, 1, 3).reshape(batch, seq, q_heads * d_v)
        return [out.astype(t["query"].dtype), state.astype(state_type)]


def _unpack(xp: Any, x: Any, heads: int | None) -> Any:
    """(batch, seq, heads*size) -> (batch, heads, seq, size) in float32; ``heads=None`` makes one value per
    head (batch, seq, heads) -> (batch, heads, seq, 1)."""
    b, s, packed = x.shape
    split = (b, s, heads, packed // heads) if heads is not None else (b, s, packed, 1)
    return x.reshape(split).transpose(0, 2, 1, 3).astype(xp.float32)

"""The scores' side of Attention: the additive bias (mask, causal frontier, sliding window, external-cache
padding) and the softmax that turns -inf rows into zeros.

Every rule is an elementwise comparison of index grids with the offset, so it runs on the device; the external
cache's offset ``nonpad_kv_seqlen[b] - q_len`` is a run-time tensor and never comes to the host.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reprobuild.layers._attention_round import rounder, work_dtype
from reprobuild.layers.base import Attrs


def attention_bias(xp: Any, attrs: Attrs, t: dict[str, Any], work: str, q_len: int, kv_len: int,
                   past: int) -> Any:
    """The additive bias (0 or -inf, plus a float mask), broadcastable to (batch, heads, q_len, kv_len)."""
    zero, ninf = xp.zeros((), dtype=work), xp.asarray(-np.inf, dtype=work)
    bias = xp.zeros((q_len, kv_len), dtype=work)
    if "attn_mask" in t:
        mask = t["attn_mask"]
        short = kv_len - mask.shape[-1]
        mask = xp.where(mask, zero, ninf) if mask.dtype == xp.bool_ else mask.astype(work)
        if short:
            fill = xp.full((*mask.shape[:-1], short), -np.inf, dtype=work)
            mask = xp.concatenate([mask, fill], axis=-1)
        bias = bias + mask
    i = xp.asarray(np.arange(q_len).reshape(q_len, 1))
    j = xp.asarray(np.arange(kv_len).reshape(1, kv_len))
    if "nonpad_kv_seqlen" in t:
        nonpad = t["nonpad_kv_seqlen"].reshape(-1, 1, 1, 1)
        offset = nonpad - q_len
    else:
        nonpad, offset = None, past
    pos = i + offset  # the query's absolute position, per batch with an external cache
    allowed = None
    if int(attrs["is_causal"]):
        allowed = j <= pos
    left, right = int(attrs["left_window_size"]), int(attrs["right_window_size"])
    if left >= 0:
        allowed = (pos - j <= left) if allowed is None else allowed & (pos - j <= left)
    if right >= 0:
        allowed = (j - pos <= right) if allowed is None else allowed & (j - pos <= right)
    if nonpad is not None:
        allowed = (j < nonpad) if allowed is None else allowed & (j < nonpad)
    if allowed is not None:
        bias = bias + xp.where(allowed, zero, ninf)
    return bias


def softmax(xp: Any, x: Any, dtype: str) -> Any:
    """Softmax over the last axis in ``dtype``'s precision; a row that is -inf everywhere gives zeros, not NaN.
    The result is in ``dtype``'s work dtype."""
    work, rnd = work_dtype(dtype), rounder(xp, dtype)
    x = rnd(x.astype(work))
    top = xp.max(x, axis=-1, keepdims=True)
    top = xp.where(top == -xp.inf, xp.zeros((), dtype=work), top)
    e = rnd(xp.exp(rnd(x - top)))
    total = _row_sum(xp, e, dtype, rnd)
    total = xp.where(total == 0, xp.ones((), dtype=work), total)
    return rnd(e / total)


def _row_sum(xp: Any, e: Any, dtype: str, rnd: Any) -> Any:
    """Sum over the last axis in ``dtype``: bfloat16 adds left to right, rounding every partial sum (as
    ml_dtypes' reduction does); the other types sum in their work dtype and round once."""
    if dtype != "bfloat16":
        return rnd(xp.sum(e, axis=-1, keepdims=True))
    total = e[..., 0:1]
    for j in range(1, e.shape[-1]):
        total = rnd(total + e[..., j:j + 1])
    return total

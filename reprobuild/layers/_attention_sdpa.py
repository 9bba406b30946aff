"""Attention (opsets 23, 24, 25): scaled dot-product attention with heads, grouped-query heads, masks, a KV cache
and a sliding window, as ``onnx.reference``'s ``op_attention`` computes it.

Canonical attributes: ``q_num_heads`` and ``kv_num_heads`` (from the shapes for 4-D inputs), ``scale`` (the
default ``1/sqrt(head_size)`` filled in), ``is_causal``, ``softcap``, ``qk_matmul_output_mode``,
``softmax_dtype`` (a dtype name; the query's when ``softmax_precision`` is absent), ``left_window_size`` and
``right_window_size`` (-1 before opset 25), ``roles`` (which of Q, K, V, attn_mask, past_key, past_value,
nonpad_kv_seqlen the layer's inputs are) and ``outputs`` (which of Y, present_key, present_value,
qk_matmul_output the layer's outputs are: the ones the model uses, in that order).

ONNX subtleties, all decided by the spec's text and checked against onnxruntime where the reference differs:

- every step is in the query's type T1 (``Q*sqrt(scale)``, the scores, the softcap, the bias addition, the
  softmax unless ``softmax_precision`` says otherwise, the final product), so float16 and bfloat16 round after
  each step (``_attention_round``);
- the bias is the sum of the mask (a boolean mask gives 0 / -inf; a float mask is added as is, padded with -inf
  when its last axis is shorter than the keys), the bottom-right causal frontier ``j <= i + offset``, the window
  ``offset + i - left <= j <= offset + i + right`` and, with ``nonpad_kv_seqlen``, ``j < nonpad[b]``; offset is
  the past length, or ``nonpad[b] - q_len`` with an external cache (a run-time value, applied on the device);
- a query row whose bias is -inf everywhere gives zeros, not NaN (Y and mode-3 probabilities);
- ``qk_matmul_output_mode`` 0 is the raw scaled product, before the softcap (the spec and onnxruntime; the
  reference returns the softcapped scores there).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from reprobuild.core.dtypes import FLOATS, np_dtype
from reprobuild.layers._attention_bias import attention_bias, softmax
from reprobuild.layers._attention_round import cast, rounder, work_dtype
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType, broadcast

OUTPUTS = ("Y", "present_key", "present_value", "qk_matmul_output")


_MASK_TYPES = ("bool",)


class Attention(LayerDef):
    op = "Attention"
    version = 2
    num_inputs = (3, 7)
    num_outputs = (1, 4)
    dtypes = FLOATS

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        t = dict(zip(attrs["roles"], inputs))
        q, k, v = t["Q"], t["K"], t["V"]
        self.check_types([q])
        for name in ("K", "V", "past_key", "past_value"):
            if name in t and t[name].dtype != q.dtype:
                raise OpError(f"{name} has dtype {t[name].dtype} but Q has {q.dtype}; reprobuild needs them equal")
        g = _geometry(attrs, q, k, v)
        past = 0
        if "past_key" in t:
            pk, pv = t["past_key"].shape, t["past_value"].shape
            past = pk[2] if len(pk) == 4 else -1
            if pk != (g.batch, g.kv_heads, past, g.head_k) or pv != (g.batch, g.kv_heads, past, g.head_v):
                raise OpError(f"past_key {list(pk)} and past_value {list(pv)} must be (batch={g.batch}, "
                              f"kv_heads={g.kv_heads}, past_len, {g.head_k} / {g.head_v})")
        total = past + g.kv_len
        scores = (g.batch, g.q_heads, g.q_len, total)
        if "attn_mask" in t:
            _check_mask(t["attn_mask"], q.dtype, scores)
        if "nonpad_kv_seqlen" in t and (t["nonpad_kv_seqlen"].dtype != "int64" or
                                        t["nonpad_kv_seqlen"].shape != (g.batch,)):
            n = t["nonpad_kv_seqlen"]
            raise OpError(f"nonpad_kv_seqlen must be int64 of shape [{g.batch}]; it is {n.dtype} {list(n.shape)}")
        if attrs["softmax_dtype"] not in FLOATS:
            raise OpError(f"softmax_dtype {attrs['softmax_dtype']} is not a float type")
        if not float(attrs["scale"]) >= 0:  # Q and K are each multiplied by sqrt(scale)
            raise OpError(f"scale {attrs['scale']!r} is negative; Q and K are each multiplied by its square root")
        if attrs["qk_matmul_output_mode"] not in (0, 1, 2, 3) or attrs["is_causal"] not in (0, 1):
            raise OpError(f"qk_matmul_output_mode {attrs['qk_matmul_output_mode']!r} is not 0, 1, 2 or 3, or "
                          f"is_causal {attrs['is_causal']!r} is not 0 or 1")
        y = (g.batch, g.q_len, g.q_heads * g.head_v) if q.rank == 3 else (g.batch, g.q_heads, g.q_len, g.head_v)
        out = [TensorType(y, q.dtype), TensorType((g.batch, g.kv_heads, total, g.head_k), q.dtype),
               TensorType((g.batch, g.kv_heads, total, g.head_v), q.dtype), TensorType(scores, q.dtype)]
        by_name = dict(zip(OUTPUTS, out))
        return [by_name[name] for name in attrs["outputs"]]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        t = dict(zip(attrs["roles"], inputs))
        dtype = str(t["Q"].dtype)
        work, rnd = work_dtype(dtype), rounder(xp, dtype)
        q_heads, kv_heads = int(attrs["q_num_heads"]), int(attrs["kv_num_heads"])
        q, k, v = (_heads_first(t[n], h) for n, h in (("Q", q_heads), ("K", kv_heads), ("V", kv_heads)))
        if "past_key" in t:
            k = xp.concatenate([t["past_key"], k], axis=2)
            v = xp.concatenate([t["past_value"], v], axis=2)
        present_k, present_v = (k, v) if "past_key" in t else (k.copy(), v.copy())
        root = as_type(math.sqrt(float(attrs["scale"])), dtype)
        qs = rnd(q.astype(work) * root)
        ks = rnd(k.astype(work) * root)
        group = q_heads // kv_heads
        if group > 1:
            ks, v = xp.repeat(ks, group, axis=1), xp.repeat(v, group, axis=1)
        raw = rnd(xp.matmul(qs, xp.swapaxes(ks, -1, -2)))
        capped = _softcap(xp, raw, float(attrs["softcap"]), dtype, rnd)
        past = t["past_key"].shape[2] if "past_key" in t else 0
        bias = attention_bias(xp, attrs, t, work, q.shape[2], k.shape[2], past)
        scores = rnd(capped + bias)
        probs = softmax(xp, scores, str(attrs["softmax_dtype"]))
        empty = xp.max(bias, axis=-1, keepdims=True) == -xp.inf
        probs = xp.where(empty, xp.zeros((), dtype=probs.dtype), probs)
        probs_t = cast(xp, probs, dtype).astype(work)
        y = rnd(xp.matmul(probs_t, v.astype(work)))
        if t["Q"].ndim == 3:
            batch, heads, q_len, head_v = y.shape
            y = xp.swapaxes(y, 1, 2).reshape(batch, q_len, heads * head_v)
        mode = int(attrs["qk_matmul_output_mode"])
        qk = (raw, capped, scores, probs_t)[mode]
        outs = dict(zip(OUTPUTS, (cast(xp, y, dtype), present_k, present_v, cast(xp, qk, dtype))))
        return [outs[name] for name in attrs["outputs"]]


class _Geometry(NamedTuple):
    batch: int
    q_heads: int
    kv_heads: int
    q_len: int
    kv_len: int
    head_k: int
    head_v: int


def _geometry(attrs: Attrs, q: TensorType, k: TensorType, v: TensorType) -> _Geometry:
    q_heads, kv_heads = int(attrs["q_num_heads"]), int(attrs["kv_num_heads"])
    if not q.rank == k.rank == v.rank or q.rank not in (3, 4):
        raise OpError(f"Q {list(q.shape)}, K {list(k.shape)} and V {list(v.shape)} must all be 3-D or all 4-D")
    if q.rank == 3:
        for name, x, heads in (("Q", q, q_heads), ("K", k, kv_heads), ("V", v, kv_heads)):
            if x.shape[2] % heads:
                raise OpError(f"{name}'s hidden size {x.shape[2]} is not divisible by its {heads} heads")
        g = _Geometry(batch=q.shape[0], q_heads=q_heads, kv_heads=kv_heads, q_len=q.shape[1], kv_len=k.shape[1],
                      head_k=k.shape[2] // kv_heads, head_v=v.shape[2] // kv_heads)
        head_q = q.shape[2] // q_heads
        v_len = v.shape[1]
    else:
        if (q.shape[1], k.shape[1], v.shape[1]) != (q_heads, kv_heads, kv_heads):
            raise OpError(f"Q {list(q.shape)}, K {list(k.shape)}, V {list(v.shape)} do not have {q_heads} query "
                          f"and {kv_heads} key/value heads on axis 1")
        g = _Geometry(batch=q.shape[0], q_heads=q_heads, kv_heads=kv_heads, q_len=q.shape[2], kv_len=k.shape[2],
                      head_k=k.shape[3], head_v=v.shape[3])
        head_q = q.shape[3]
        v_len = v.shape[2]
    if k.shape[0] != g.batch or v.shape[0] != g.batch or v_len != g.kv_len or head_q != g.head_k:
        raise OpError(f"Q {list(q.shape)}, K {list(k.shape)} and V {list(v.shape)} disagree on the batch, the key "
                      "length or the query/key head size")
    if q_heads % kv_heads:
        raise OpError(f"q_num_heads={q_heads} is not a multiple of kv_num_heads={kv_heads}")
    return g


def _check_mask(mask: TensorType, dtype: str, scores: tuple[int, ...]) -> None:
    if mask.dtype not in (*_MASK_TYPES, dtype):
        raise OpError(f"attn_mask has dtype {mask.dtype}; reprobuild takes a bool mask or an additive mask of Q's "
                      f"dtype {dtype}")
    if not 1 <= mask.rank <= 4 or mask.shape[-1] > scores[-1]:
        raise OpError(f"attn_mask {list(mask.shape)} must have rank 1 to 4 and at most {scores[-1]} keys (it is "
                      "padded with masked keys up to that)")
    padded = (*mask.shape[:-1], scores[-1])
    if broadcast(padded, scores) != scores:
        raise OpError(f"attn_mask {list(mask.shape)} does not broadcast to the scores {list(scores)}")


def _heads_first(x: Any, heads: int) -> Any:
    """(batch, seq, heads*size) -> (batch, heads, seq, size); 4-D inputs are already so."""
    if x.ndim == 4:
        return x
    b, s, hidden = x.shape
    return x.reshape(b, s, heads, hidden // heads).transpose(0, 2, 1, 3)


def as_type(value: float, dtype: str) -> float:
    """A Python float rounded to ``dtype`` (on the host), as ONNX casts a scalar attribute to the inputs' type."""
    return float(np.asarray(value, dtype=np.float64).astype(np_dtype(dtype)))


def _softcap(xp: Any, x: Any, softcap: float, dtype: str, rnd: Any) -> Any:
    if softcap <= 0:
        return x
    cap = as_type(softcap, dtype)
    return rnd(rnd(xp.tanh(rnd(x / x.dtype.type(cap)))) * x.dtype.type(cap))

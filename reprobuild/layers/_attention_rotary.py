"""RotaryEmbedding (opset 23): rotary position embeddings (RoPE) on 4-D (batch, heads, seq, head_size) or 3-D
(batch, seq, heads*head_size) inputs, the halves or the interleaved pairs of the first ``rotary_embedding_dim``
channels rotated by the cached cos/sin of each token's position.

Canonical attributes: ``num_heads`` (from the shape for 4-D inputs), ``rotary_embedding_dim`` (the head size
when 0), ``interleaved``. ``position_ids`` stays a run-time input: the caches are gathered on the device, with
ids clamped to the cache (ONNX leaves ids outside it undefined; clamping makes the CPU and the GPU agree). The
spec's algorithm runs in the input type, so float16 and bfloat16 round after every product and sum, as the
reference does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reprobuild.layers._attention_round import rounder, work_dtype
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType


class RotaryEmbedding(LayerDef):
    op = "RotaryEmbedding"
    version = 2
    num_inputs = (3, 4)
    dtypes = ("float16", "bfloat16", "float32")
    same_type = (1, 2)

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        x, cos, sin = inputs[:3]
        heads, dim = int(attrs["num_heads"]), int(attrs["rotary_embedding_dim"])
        if x.rank == 3:
            batch, seq = x.shape[0], x.shape[1]
        elif x.rank == 4:
            batch, seq = x.shape[0], x.shape[2]
        else:
            raise OpError(f"the input must be 3-D or 4-D; it is {list(x.shape)}")
        if (x.rank == 4 and x.shape[1] != heads) or (x.rank == 3 and x.shape[2] % heads):
            raise OpError(f"the input {list(x.shape)} does not have {heads} heads")
        if len(inputs) > 3:
            ids = inputs[3]
            if ids.dtype != "int64" or ids.shape != (batch, seq):
                raise OpError(f"position_ids must be int64 of shape [{batch}, {seq}]; it is {ids.dtype} "
                              f"{list(ids.shape)}")
            want = "(positions, rotary_embedding_dim/2)"
            ok = cos.rank == 2 and cos.shape[1] == dim // 2 and cos.shape[0] > 0
        else:
            want = f"(batch={batch}, seq={seq}, rotary_embedding_dim/2={dim // 2})"
            ok = cos.shape == (batch, seq, dim // 2)
        if not ok or sin.shape != cos.shape:
            raise OpError(f"cos_cache {list(cos.shape)} and sin_cache {list(sin.shape)} must both be {want}")
        return [x]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x, cos, sin = inputs[:3]
        dtype = str(x.dtype)
        work, rnd = work_dtype(dtype), rounder(xp, dtype)
        heads, dim = int(attrs["num_heads"]), int(attrs["rotary_embedding_dim"])
        shape = x.shape
        # (batch, seq, heads, head_size), the layout the spec computes in
        h = x.transpose(0, 2, 1, 3) if x.ndim == 4 else x.reshape(shape[0], shape[1], heads, -1)
        h = h.astype(work)
        cos, sin = cos.astype(work), sin.astype(work)
        if len(inputs) > 3:
            ids = xp.clip(inputs[3], 0, cos.shape[0] - 1)
            cos, sin = xp.take(cos, ids, axis=0), xp.take(sin, ids, axis=0)
        cos, sin = cos[:, :, None, :], sin[:, :, None, :]
        rot, rest = h[..., :dim], h[..., dim:]
        if int(attrs["interleaved"]):
            x1, x2 = rot[..., 0::2], rot[..., 1::2]
        else:
            x1, x2 = rot[..., :dim // 2], rot[..., dim // 2:]
        real = rnd(rnd(cos * x1) - rnd(sin * x2))
        imag = rnd(rnd(sin * x1) + rnd(cos * x2))
        if int(attrs["interleaved"]):
            rot = xp.stack([real, imag], axis=-1).reshape(rot.shape)
        else:
            rot = xp.concatenate([real, imag], axis=-1)
        out = xp.concatenate([rot, rest], axis=-1)
        out = out.transpose(0, 2, 1, 3) if x.ndim == 4 else out.reshape(shape)
        return [out.astype(x.dtype)]

"""The ONNX half of :mod:`reprobuild.layers._attention_sdpa` (whose docstring says what the layers compute): the ONNX
versions each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

import math
from typing import Any

from reprobuild.layers import _attention_sdpa as layer
from reprobuild.layers._attention_sdpa import (
    OUTPUTS,
)
from reprobuild.layers.base import TensorType
from reprobuild.ops.attr import ABSENT
from reprobuild.ops.base import Node, OpDef

ROLES = ("Q", "K", "V", "attn_mask", "past_key", "past_value", "nonpad_kv_seqlen")


#: softmax_precision values (ONNX TensorProto element types) and the dtypes they name
_PRECISIONS = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16"}


class Attention(OpDef, layer.Attention):
    versions = (23, 24, 25)

    def convert(self, node: Node) -> None:
        if node.version < 24 and node.num_inputs > 6:
            raise node.fail("has 7 inputs; nonpad_kv_seqlen exists from Attention-24 on")
        present = [i for i in range(node.num_inputs) if node.input(i) is not None]
        roles = tuple(ROLES[i] for i in present)
        if ("past_key" in roles) != ("past_value" in roles):
            raise node.fail("past_key and past_value must be given together (or neither)")
        if "past_key" in roles and "nonpad_kv_seqlen" in roles:
            raise node.fail("nonpad_kv_seqlen (an external KV cache) cannot be combined with past_key/past_value")
        used = [i for i in range(node.num_outputs) if node.output_used(i)] or [0]
        types = {r: node.input(i) for r, i in zip(roles, present)}
        attrs = self._canonical(node, types)
        if 3 not in used:
            attrs["qk_matmul_output_mode"] = 0  # what the unused output would hold does not matter
        node.emit({**attrs, "roles": roles, "outputs": tuple(OUTPUTS[i] for i in used)}, inputs=present,
                  outputs=used)

    def _canonical(self, node: Node, types: dict[str, TensorType | None]) -> dict[str, Any]:
        q, k = types["Q"], types["K"]
        assert q is not None and k is not None
        given = {key: node.attr(key) for key in ("q_num_heads", "kv_num_heads")}
        if q.rank == 3:
            if any(v is ABSENT for v in given.values()):
                raise node.fail("3-D Q, K and V need the q_num_heads and kv_num_heads attributes")
            q_heads, kv_heads = int(given["q_num_heads"]), int(given["kv_num_heads"])
        elif q.rank == 4:
            q_heads, kv_heads = q.shape[1], k.shape[1] if k.rank == 4 else -1
            for key, shape_value in (("q_num_heads", q_heads), ("kv_num_heads", kv_heads)):
                if given[key] is not ABSENT and (node.version >= 25 or int(given[key]) != shape_value):
                    raise node.fail(f"{key}={given[key]} is given for 4-D inputs, whose heads are axis 1 "
                                    f"({shape_value}); leave it out")
        else:
            raise node.fail(f"Q must be 3-D (batch, seq, hidden) or 4-D (batch, heads, seq, head_size); it is "
                            f"{list(q.shape)}")
        if q_heads < 1 or kv_heads < 1 or q_heads % kv_heads:
            raise node.fail(f"q_num_heads={q_heads} must be a positive multiple of kv_num_heads={kv_heads}")
        head_size = q.shape[-1] // q_heads if q.rank == 3 else q.shape[-1]
        scale = node.attr("scale")
        precision = node.attr("softmax_precision")
        if precision is not ABSENT and int(precision) not in _PRECISIONS:
            raise node.fail(f"softmax_precision={precision} is not one of {sorted(_PRECISIONS)} (float, float16, "
                            "double, bfloat16)")
        mode = int(node.attr("qk_matmul_output_mode"))
        if mode not in (0, 1, 2, 3):
            raise node.fail(f"qk_matmul_output_mode={mode} is not 0, 1, 2 or 3")
        windows = {key: int(node.attr(key)) if node.version >= 25 else -1
                   for key in ("left_window_size", "right_window_size")}
        if min(windows.values()) < -1:
            raise node.fail(f"window sizes must be -1 (unbounded) or non-negative; got {windows}")
        if head_size < 1:
            raise node.fail(f"Q {list(q.shape)} with {q_heads} heads has no head size")
        if scale is not ABSENT and float(scale) < 0:
            raise node.fail(f"scale={scale} is negative; the spec multiplies Q and K by sqrt(scale) each, which a "
                            "negative scale does not have")
        return {
            "q_num_heads": q_heads, "kv_num_heads": kv_heads,
            "scale": float(scale) if scale is not ABSENT else 1.0 / math.sqrt(head_size),
            "is_causal": int(bool(node.attr("is_causal"))), "softcap": max(float(node.attr("softcap")), 0.0),
            "qk_matmul_output_mode": mode,
            "softmax_dtype": _PRECISIONS[int(precision)] if precision is not ABSENT else q.dtype,
            **windows,
        }

"""The ONNX half of :mod:`reprobuild.layers._attention_linear` (whose docstring says what the layers compute): the ONNX
versions each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

import math

from reprobuild.layers import _attention_linear as layer
from reprobuild.ops.attr import ABSENT
from reprobuild.ops.base import Node, OpDef

ROLES = ("query", "key", "value", "past_state", "decay", "beta")


RULES = ("linear", "gated", "delta", "gated_delta")


class LinearAttention(OpDef, layer.LinearAttention):
    versions = (27,)
    checks_required = ("kv_num_heads", "q_num_heads")  # convert asks for both at once

    def convert(self, node: Node) -> None:
        present = [i for i in range(node.num_inputs) if node.input(i) is not None]
        roles = tuple(ROLES[i] for i in present)
        rule = str(node.attr("update_rule"))
        if rule not in RULES:
            raise node.fail(f"update_rule={rule!r} is not one of {', '.join(RULES)}")
        gated, delta = rule in ("gated", "gated_delta"), rule in ("delta", "gated_delta")
        for role, needed in (("decay", gated), ("beta", delta)):
            if needed != (role in roles):
                raise node.fail(f"update_rule={rule!r} {'needs' if needed else 'takes no'} {role} input")
        heads = {key: node.attr(key) for key in ("q_num_heads", "kv_num_heads")}
        if any(v is ABSENT for v in heads.values()):
            raise node.fail("the q_num_heads and kv_num_heads attributes are required")
        q_heads, kv_heads = int(heads["q_num_heads"]), int(heads["kv_num_heads"])
        if q_heads < 1 or kv_heads < 1 or q_heads % kv_heads:
            raise node.fail(f"q_num_heads={q_heads} must be a positive multiple of kv_num_heads={kv_heads}")
        query = node.input(0)
        assert query is not None
        if query.rank != 3 or query.shape[2] % q_heads:
            raise node.fail(f"query must be 3-D (batch, seq, q_num_heads*d_k) with {q_heads} heads; it is "
                            f"{list(query.shape)}")
        scale = float(node.attr("scale")) or 1.0 / math.sqrt(query.shape[2] // q_heads)
        node.emit({"q_num_heads": q_heads, "kv_num_heads": kv_heads, "scale": scale, "update_rule": rule,
                   "roles": roles}, inputs=present)

"""The ONNX half of :mod:`reprobuild.layers._attention_rotary` (whose docstring says what the layers compute): the ONNX
versions each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from reprobuild.layers import _attention_rotary as layer
from reprobuild.ops.attr import ABSENT
from reprobuild.ops.base import Node, OpDef


class RotaryEmbedding(OpDef, layer.RotaryEmbedding):
    versions = (23,)

    def convert(self, node: Node) -> None:
        x = node.input(0)
        assert x is not None
        heads = node.attr("num_heads")
        if x.rank == 3:
            if heads is ABSENT or int(heads) < 1 or x.shape[2] % int(heads):
                raise node.fail(f"a 3-D input {list(x.shape)} needs num_heads, a positive divisor of its hidden "
                                f"size; got {None if heads is ABSENT else heads}")
            heads = int(heads)
        elif x.rank == 4:
            if heads is not ABSENT and int(heads) != x.shape[1]:
                raise node.fail(f"num_heads={heads} disagrees with the 4-D input's {x.shape[1]} heads (axis 1)")
            heads = x.shape[1]
        else:
            raise node.fail(f"the input must be 3-D or 4-D; it is {list(x.shape)}")
        head_size = x.shape[-1] // heads if x.rank == 3 else x.shape[-1]
        dim = int(node.attr("rotary_embedding_dim")) or head_size
        if dim % 2 or not 0 < dim <= head_size:
            raise node.fail(f"rotary_embedding_dim={dim} must be even and at most the head size {head_size}")
        node.emit({"interleaved": int(bool(node.attr("interleaved"))), "num_heads": heads,
                   "rotary_embedding_dim": dim})

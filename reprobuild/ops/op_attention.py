"""The ONNX half of :mod:`reprobuild.layers.op_attention` (whose docstring says what the layers compute): the ONNX
versions each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from reprobuild.ops._attention_causal_conv import CausalConvWithState
from reprobuild.ops._attention_linear import LinearAttention
from reprobuild.ops._attention_rotary import RotaryEmbedding
from reprobuild.ops._attention_sdpa import Attention

OPS = (Attention(), CausalConvWithState(), LinearAttention(), RotaryEmbedding())

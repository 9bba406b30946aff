"""Attention-family ops of opsets 23 to 27: Attention (``_attention_sdpa``), RotaryEmbedding
(``_attention_rotary``), and the recurrent LinearAttention (``_attention_linear``) and CausalConvWithState
(``_attention_causal_conv``).

Half-precision arithmetic follows the spec's named precisions step by step (``_attention_round``). FlexAttention
lives in the ``ai.onnx.preview`` domain and takes its score and probability modifiers as subgraphs; reprobuild
implements the default domain without subgraphs, so the frontend refuses it by name.
"""

from __future__ import annotations

from reprobuild.layers._attention_causal_conv import CausalConvWithState
from reprobuild.layers._attention_linear import LinearAttention
from reprobuild.layers._attention_rotary import RotaryEmbedding
from reprobuild.layers._attention_sdpa import Attention

LAYERS = (Attention(), CausalConvWithState(), LinearAttention(), RotaryEmbedding())

"""The ONNX half of :mod:`reprobuild.layers.op_rnn` (whose docstring says what the layers compute): the ONNX versions
each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from typing import Any

from reprobuild.layers import op_rnn as layer
from reprobuild.ops._rnn_common import Recurrent
from reprobuild.ops.attr import Attr
from reprobuild.ops.base import Node


class RNN(Recurrent, layer.RNN):
    # ONNX's default ["Tanh", "Tanh"] fits only a bidirectional RNN: convert fills in Tanh for each direction.
    attribute_overrides = {"activations": Attr("strings")}


class GRU(Recurrent, layer.GRU):
    def check_extra(self, node: Node, attrs: dict[str, Any]) -> None:
        attrs["linear_before_reset"] = int(attrs["linear_before_reset"] != 0)


class LSTM(Recurrent, layer.LSTM):
    def check_extra(self, node: Node, attrs: dict[str, Any]) -> None:
        attrs["input_forget"] = int(attrs["input_forget"] != 0)


OPS = (GRU(), LSTM(), RNN())

"""Fuse chains of elementwise layers into one FusedElementwise layer, so that a GPU runs them as one generated
kernel: one read of each input and one write of the output instead of a round trip through memory per layer.

A group is a maximal connected set of at least two elementwise layers (``STEP_OPS`` of
``reprobuild.ops.op_fused_elementwise``) where every tensor a member produces, except the group's one output, is
read only by members and is not a network output; every input (activations and constants alike, constants stay
inputs) broadcasts to the output's shape, and every tensor has one float dtype. Groups grow backwards from their
output layer, the last layers first, adding a producer once every reader of its output is in the group. Layers
are visited by position only, so the result depends on nothing but the network. The fused layer takes the name
of the group's output layer, sits where it was, and keeps the ONNX nodes of every member (``origin``), in layer
order.
"""

from __future__ import annotations

from collections.abc import Sequence

from reprobuild.core.symbolic import SymbolicShapeError
from reprobuild.ir import Layer, Network
from reprobuild.layers.op_fused_elementwise import BINARY, STEP_ATTRS, STEP_OPS, Step, encode_step
from reprobuild.ops import symbolic_infer
from reprobuild.ops.base import OpError, TensorType
from reprobuild.ops.op_fused_elementwise import FusedElementwise

VERSION = 1

FLOAT_DTYPES = ("bfloat16", "float16", "float32", "float64")


def _fusable(network: Network, layer: Layer) -> str | None:
    """The layer's dtype when it can be a step of a fused program, else None."""
    if layer.op not in STEP_OPS or len(layer.outputs) != 1:
        return None
    if len(layer.inputs) != (2 if layer.op in BINARY else 1):  # Max/Min of 1 or 3+ inputs, Clip with bound inputs
        return None
    if tuple(key for key, _ in layer.attrs) != STEP_ATTRS.get(layer.op, ()):
        return None
    dtypes = {network.tensors[t].dtype for t in (*layer.inputs, *layer.outputs)}
    if len(dtypes) != 1 or not dtypes <= set(FLOAT_DTYPES):
        return None
    return dtypes.pop()


def _groups(network: Network) -> list[list[int]]:
    """The layer positions of each group, each sorted; groups ordered by their output layer, last first."""
    layers = network.layers
    producer = {t: i for i, layer in enumerate(layers) for t in layer.outputs}
    readers: dict[str, set[int]] = {}
    for i, layer in enumerate(layers):
        for t in layer.inputs:
            readers.setdefault(t, set()).add(i)
    outputs = {t.name for t in network.outputs}
    dtype = [_fusable(network, layer) for layer in layers]
    taken = [False] * len(layers)
    groups: list[list[int]] = []
    for sink in reversed(range(len(layers))):
        if dtype[sink] is None or taken[sink]:
            continue
        members = {sink}
        grown = True
        while grown:
            grown = False
            for i in sorted(members):
                for t in layers[i].inputs:
                    p = producer.get(t)
                    if (p is None or p in members or taken[p] or dtype[p] != dtype[sink] or t in outputs
                            or not readers[t] <= members):
                        continue
                    members.add(p)
                    grown = True
        if len(members) >= 2:
            for i in members:
                taken[i] = True
            groups.append(sorted(members))
    return groups


def fused_layer(network: Network, members: Sequence[Layer]) -> Layer | None:
    """The FusedElementwise layer computing ``members`` (in network order, the output layer last), or None when
    they make no valid program (inputs that do not broadcast to the output's shape, say)."""
    step_of = {layer.outputs[0]: k for k, layer in enumerate(members)}
    inputs: list[str] = []
    program = []
    for layer in members:
        operands = []
        for t in layer.inputs:
            if t in step_of:
                operands.append(("step", step_of[t]))
                continue
            if t not in inputs:
                inputs.append(t)
            operands.append(("in", inputs.index(t)))
        program.append(Step(layer.op, tuple(operands), tuple(sorted(layer.attrs))))
    sink = members[-1]
    types = [TensorType(network.tensors[t].shape, network.tensors[t].dtype) for t in inputs]
    try:
        attrs = (("steps", tuple(encode_step(step) for step in program)),)
        (out,) = symbolic_infer.infer(FusedElementwise(), dict(attrs), types)
    except (OpError, SymbolicShapeError):
        return None
    if out.shape != network.tensors[sink.outputs[0]].shape:
        return None
    origin = tuple(dict.fromkeys(n for layer in members for n in layer.origin))
    return Layer(sink.name, "FusedElementwise", tuple(inputs), sink.outputs, attrs, origin)


def fuse_elementwise(network: Network) -> Network:
    replaced: dict[int, Layer | None] = {}
    for group in _groups(network):
        layer = fused_layer(network, [network.layers[i] for i in group])
        if layer is None:
            continue
        for i in group:
            replaced[i] = None
        replaced[group[-1]] = layer
    if not replaced:
        return network
    layers = [replaced.get(i, layer) for i, layer in enumerate(network.layers)]
    return network.derive([layer for layer in layers if layer is not None])

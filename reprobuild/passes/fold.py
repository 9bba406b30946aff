"""Constant folding: a layer whose inputs are all constants is computed now, with its op's NumPy reference, and
becomes a constant. The ONNX frontend already folds while it parses; this pass does the same for networks built
through the API and for what other passes leave behind.

A layer that produces a network output stays (an engine computes its outputs), and so does one whose result
would be larger than MAX_FOLDED_BYTES (computed at run time instead of stored in the engine file).
"""

from __future__ import annotations

from reprobuild.core import symbolic
from reprobuild.ir import Layer, Network
from reprobuild.ops.registry import evaluate

VERSION = 2
MAX_FOLDED_BYTES = 1 << 30


def fold_constants(network: Network) -> Network:
    constants = dict(network.constants)
    outputs = {t.name for t in network.outputs}
    kept: list[Layer] = []
    for layer in network.layers:
        if any(symbolic.is_symbolic(network.tensors[t].shape) for t in layer.outputs):
            kept.append(layer)  # its size depends on a dynamic axis: computed at run time
            continue
        size = sum(network.tensors[t].nbytes for t in layer.outputs)
        if (all(t in constants for t in layer.inputs) and not outputs.intersection(layer.outputs)
                and size <= MAX_FOLDED_BYTES):
            values = evaluate(layer.op, dict(layer.attrs), [constants[t] for t in layer.inputs],
                              f"layer {layer.name!r} ({layer.op})")
            constants.update(zip(layer.outputs, values))
        else:
            kept.append(layer)
    if len(kept) == len(network.layers):
        return network
    return network.derive(kept, constants)

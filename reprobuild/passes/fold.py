"""Constant folding: a layer whose inputs are all constants is evaluated now and becomes a constant.

The ONNX frontend already folds while it parses; this pass does the same for networks built through the API.
"""

from __future__ import annotations

from reprobuild.evaluate import evaluate_layer
from reprobuild.ir import Layer, Network


def fold_constants(network: Network) -> Network:
    constants = dict(network.constants)
    kept: list[Layer] = []
    for layer in network.layers:
        if all(t in constants for t in layer.inputs):
            values = evaluate_layer(layer, [constants[t] for t in layer.inputs],
                                    [network.tensors[t] for t in layer.outputs])
            constants.update(zip(layer.outputs, values))
        else:
            kept.append(layer)
    if len(kept) == len(network.layers):
        return network
    return Network.create(network.name, network.inputs, [t.name for t in network.outputs], kept,
                          network.tensors, constants, network.source)

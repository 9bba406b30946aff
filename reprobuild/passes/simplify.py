"""Structural clean-ups: drop Identity layers (Dropout becomes Identity in the frontend) and dead code."""

from __future__ import annotations

from reprobuild.ir import Layer, Network


def eliminate_identities(network: Network) -> Network:
    """Rewire the consumers of each Identity to its input. An Identity that produces a network output from a
    network input stays (the engine must still copy it into the output binding)."""
    outputs = {t.name for t in network.outputs}
    rename: dict[str, str] = {}
    kept: list[Layer] = []
    for layer in network.layers:
        ins = tuple(rename.get(t, t) for t in layer.inputs)
        if layer.op == "Identity" and layer.outputs[0] not in outputs:
            rename[layer.outputs[0]] = ins[0]
            continue
        kept.append(Layer(layer.name, layer.op, ins, layer.outputs, layer.attrs))
    if len(kept) == len(network.layers):
        return network
    return Network.create(network.name, network.inputs, [t.name for t in network.outputs], kept,
                          network.tensors, network.constants, network.source)


def eliminate_dead_code(network: Network) -> Network:
    """Remove layers whose outputs reach no network output, and constants nothing reads."""
    needed = {t.name for t in network.outputs}
    kept: list[Layer] = []
    for layer in reversed(network.layers):
        if any(t in needed for t in layer.outputs):
            kept.append(layer)
            needed.update(layer.inputs)
    kept.reverse()
    constants = {k: v for k, v in network.constants.items() if k in needed}
    if len(kept) == len(network.layers) and len(constants) == len(network.constants):
        return network
    return Network.create(network.name, network.inputs, [t.name for t in network.outputs], kept,
                          network.tensors, constants, network.source)

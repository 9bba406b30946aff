"""Structural clean-ups: drop Identity layers (Dropout becomes Identity in the frontend) and dead code."""

from __future__ import annotations

from reprobuild.ir import Layer, Network

VERSION = 1


def _renamed(layer: Layer, mapping: dict[str, str]) -> Layer:
    return Layer(layer.name, layer.op, tuple(mapping.get(t, t) for t in layer.inputs),
                 tuple(mapping.get(t, t) for t in layer.outputs), layer.attrs, layer.origin)


def _absorb(producer: Layer, identity: Layer) -> Layer:
    """The producer, now also standing for the removed Identity's ONNX nodes."""
    origin = tuple(dict.fromkeys((*producer.origin, *identity.origin)))
    return Layer(producer.name, producer.op, producer.inputs, producer.outputs, producer.attrs, origin)


def eliminate_identities(network: Network) -> Network:
    """Remove Identity layers. Consumers of an Identity's output read its input instead; when the output is a
    network output, the layer producing the input writes the network output directly. Only an Identity from a
    network input (or from another network output) to a network output stays, as a copy."""
    outputs = {t.name for t in network.outputs}
    layers = list(network.layers)
    while True:
        produced = {t for layer in layers for t in layer.outputs}
        for layer in layers:
            if layer.op != "Identity":
                continue
            src, dst = layer.inputs[0], layer.outputs[0]
            if dst not in outputs:
                mapping = {dst: src}
            elif src in produced and src not in outputs:
                mapping = {src: dst}
            else:
                continue
            layers = [_renamed(_absorb(other, layer) if src in other.outputs else other, mapping)
                      for other in layers if other is not layer]
            break
        else:
            break
    if len(layers) == len(network.layers):
        return network
    return network.derive(layers)


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
    return network.derive(kept, constants)

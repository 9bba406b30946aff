"""Structural clean-ups: drop layers that compute their input unchanged, and dead code.

``eliminate_identities`` removes every layer whose output holds, bit for bit, a tensor that already exists:

- an ``Identity`` (inference-mode Dropout becomes one in the frontend);
- a ``Cast`` to its input's own dtype (CastLike to the same type is such a Cast once parsed), for the dtypes in
  ``IDENTITY_CASTS``: ONNX's expanded functions (Attention, ...) cast float32 scores to float32. The others are
  left: a same-type Cast of bfloat16 quiets signalling NaNs (a payload bit changes), float8e5m2 with ``saturate``
  turns infinities into the largest finite value, float8e8m0 rounds its smallest value. ``saturate`` and
  ``round_mode`` change no bit for the listed ones (tests/reprobuild/test_simplify.py checks every bit pattern);
- an ``Expand`` to its input's own shape (a copy);
- a ``Pad`` of zero width on every side and a ``Slice`` of every element in order (steps of 1, the output of the
  input's shape): copies too. torchvision's swin pads each window to a multiple of the window size, and at sizes
  that are multiples already the export keeps a Pad of zeros (version 3);
- a view (Reshape, Flatten, Squeeze, Unsqueeze) whose output has the shape of a tensor it was viewed from through
  views, same-shape Expands and identities only: row-major reshapes compose, so the chain gives back that tensor
  (ONNX's expanded Attention repeats K's heads with Unsqueeze -> Expand -> Reshape, which is the identity when
  there is one query head per key head). The views above it are left for ``eliminate_dead_code`` when nothing
  else reads them.
"""

from __future__ import annotations

from reprobuild.ir import Layer, Network

VERSION = 3  # 3: zero-width Pads and whole-tensor Slices are identities

#: The dtypes whose same-type Cast returns every bit pattern unchanged, whatever ``saturate`` and ``round_mode``.
IDENTITY_CASTS = frozenset({
    "bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "int4", "uint4", "int2",
    "uint2", "float16", "float32", "float64", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2fnuz", "float4_e2m1fn",
})
#: Layers that only reinterpret the shape of their one input (row-major, no data movement).
VIEWS = frozenset({"Flatten", "Reshape", "Squeeze", "Unsqueeze"})


def _renamed(layer: Layer, mapping: dict[str, str]) -> Layer:
    return Layer(layer.name, layer.op, tuple(mapping.get(t, t) for t in layer.inputs),
                 tuple(mapping.get(t, t) for t in layer.outputs), layer.attrs, layer.origin)


def _absorb(producer: Layer, identity: Layer) -> Layer:
    """The producer, now also standing for the removed Identity's ONNX nodes."""
    origin = tuple(dict.fromkeys((*producer.origin, *identity.origin)))
    return Layer(producer.name, producer.op, producer.inputs, producer.outputs, producer.attrs, origin)


def _copies_its_input(network: Network, layer: Layer) -> bool:
    """The layer's one output is its one input, unchanged (an Identity, a same-type Cast, a same-shape Expand, a
    zero-width Pad, a whole-tensor Slice)."""
    if len(layer.inputs) != 1 or len(layer.outputs) != 1:
        return False
    src, dst = network.tensors[layer.inputs[0]], network.tensors[layer.outputs[0]]
    if layer.op == "Identity":
        return True
    if layer.op == "Cast":
        return str(layer.attr("to")) == src.dtype and src.dtype in IDENTITY_CASTS
    if tuple(src.shape) != tuple(dst.shape):
        return False
    if layer.op == "Pad":
        return not any(int(p) for p in layer.attr("pads", (1,)))
    if layer.op == "Slice":
        return all(int(step) == 1 for step in layer.attr("steps", (0,)))
    return layer.op == "Expand"


def _identity_source(network: Network, producers: dict[str, Layer], layer: Layer) -> str | None:
    """The existing tensor that ``layer``'s output equals bit for bit, or None."""
    if _copies_its_input(network, layer):
        return layer.inputs[0]
    if layer.op not in VIEWS or len(layer.inputs) != 1 or len(layer.outputs) != 1:
        return None
    want = tuple(network.tensors[layer.outputs[0]].shape)
    t = layer.inputs[0]
    while True:
        if tuple(network.tensors[t].shape) == want:
            return t
        above = producers.get(t)
        if above is None or not ((above.op in VIEWS and len(above.inputs) == 1) or _copies_its_input(network, above)):
            return None
        t = above.inputs[0]


def eliminate_identities(network: Network) -> Network:
    """Remove the layers that compute an existing tensor unchanged (see the module docstring). Consumers of such a
    layer's output read that tensor instead; when the output is a network output, the layer producing the tensor
    writes the network output directly. Only one from a network input (or from another network output) to a
    network output stays, as a copy."""
    outputs = {t.name for t in network.outputs}
    layers = list(network.layers)
    while True:  # renaming maps a name to one of the same shape and dtype, so network.tensors stays right
        producers = {t: layer for layer in layers for t in layer.outputs}
        for layer in layers:
            src = _identity_source(network, producers, layer)
            if src is None:
                continue
            dst = layer.outputs[0]
            if dst not in outputs:
                mapping = {dst: src}
            elif src in producers and src not in outputs:
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

"""Fuse what follows a convolution into its epilogue: Conv [+ residual Add] [+ activation] becomes one FusedConv.

After ``fold_batchnorm`` a ResNet block is Conv → Add(shortcut) → Relu, and a MobileNet block Conv → Clip(0, 6);
run as separate layers each re-reads and re-writes the whole activation. Fused, the convolution's epilogue
kernel adds the bias and the residual and applies the activation in one pass over its output.

Fused only when the convolution's weights (and bias) are constants, every intermediate tensor is read by the
fused layers alone and is not a network output, the residual has exactly the convolution's shape and dtype
(no broadcasting) and is not a constant. Activations: Relu, Clip with constant bounds, Sigmoid, and SiLU
written as Mul(y, Sigmoid(y)). The FusedConv keeps the ONNX nodes of every layer it replaces (``origin``).
Version 2 fuses bfloat16 convolutions too (version 1: float16, float32 and float64 only).
"""

from __future__ import annotations

import numpy as np

from reprobuild.ir import Layer, Network
from reprobuild.passes.pattern import GraphIndex, fresh_name, fuse_rounds

VERSION = 2


def only_reader(network: Network, index: GraphIndex, tensor: str) -> Layer | None:
    """The one layer reading ``tensor``, when exactly one does and it is not a network output."""
    if not index.single_use(tensor):
        return None
    return index.reader_layers(tensor)[0]


def residual_input(index: GraphIndex, add: Layer, conv_out: str) -> str | None:
    """The other operand of ``add`` when it can be a fused residual: not a constant, and of exactly the shape and
    dtype of ``conv_out`` (no broadcasting)."""
    if add.op != "Add" or len(add.inputs) != 2 or add.inputs[0] == add.inputs[1]:
        return None
    other = add.inputs[1] if add.inputs[0] == conv_out else add.inputs[0]
    mine, theirs = index.tensor(conv_out), index.tensor(other)
    if index.const(other) is not None or (theirs.shape, theirs.dtype) != (mine.shape, mine.dtype):
        return None
    return other


def activation_layers(network: Network, index: GraphIndex, tensor: str) -> tuple[list[Layer], dict] | None:
    """The activation layers reading ``tensor`` and the FusedConv (FusedGemm) attributes they become, or None."""
    readers = index.reader_layers(tensor)
    if index.is_output(tensor):
        return None
    if len(readers) == 1:
        layer = readers[0]
        if layer.op in ("Relu", "Sigmoid") and len(layer.inputs) == 1:
            return [layer], {"activation": layer.op}
        if (layer.op == "Clip" and len(layer.inputs) == 1 and layer.attr("min_from") == "value"
                and layer.attr("max_from") == "value"):
            return [layer], {"activation": "Clip", "activation_min": float(layer.attr("min")),
                             "activation_max": float(layer.attr("max"))}
        return None
    if len(readers) == 2:  # SiLU: Mul(t, Sigmoid(t))
        sig = next((r for r in readers if r.op == "Sigmoid"), None)
        mul = next((r for r in readers if r.op == "Mul"), None)
        if (sig is not None and mul is not None and len(sig.inputs) == 1 and index.single_use(sig.outputs[0])
                and sorted(mul.inputs) == sorted((tensor, sig.outputs[0]))):
            return [sig, mul], {"activation": "SiLU"}
    return None


def epilogue_after(network: Network, index: GraphIndex, tail: str) -> tuple[list[Layer], str | None, dict, str]:
    """What a fused epilogue can take after the layer writing ``tail``: a residual Add that is its only reader,
    then an activation (:func:`activation_layers`). Returns (those layers, the residual input or None, the
    activation attributes, the tensor the last of them writes)."""
    fused: list[Layer] = []
    residual, extra = None, {}
    add = only_reader(network, index, tail)
    if add is not None:
        residual = residual_input(index, add, tail)
        if residual is not None:
            fused.append(add)
            tail = add.outputs[0]
    found = activation_layers(network, index, tail)
    if found is not None:
        fused += found[0]
        extra = found[1]
        tail = fused[-1].outputs[0]
    return fused, residual, extra, tail


def _fuse_one(network: Network, index: GraphIndex, conv: Layer) -> tuple[list[Layer], Layer, dict] | None:
    if len(conv.inputs) < 2 or any(index.const(t) is None for t in conv.inputs[1:]):
        return None
    if index.tensor(conv.outputs[0]).dtype not in ("bfloat16", "float16", "float32", "float64"):
        return None
    after, residual, extra, tail = epilogue_after(network, index, conv.outputs[0])
    fused = [conv, *after]
    if len(fused) == 1:
        return None
    constants = {}
    bias = conv.inputs[2] if len(conv.inputs) > 2 else None
    if bias is None:
        weight = index.const(conv.inputs[1])
        assert weight is not None
        bias = fresh_name(index, conv.name + ":zero_bias")
        constants[bias] = np.zeros((weight.shape[0],), dtype=weight.dtype)
    attrs = {**conv.attributes, "activation": "", "activation_min": 0.0, "activation_max": 0.0, **extra}
    inputs = (conv.inputs[0], conv.inputs[1], bias, *((residual,) if residual is not None else ()))
    layer = Layer(conv.name, "FusedConv", inputs, (tail,), tuple(sorted(attrs.items())),
                  tuple(dict.fromkeys(n for f in fused for n in f.origin)))
    return fused, layer, constants


def fuse_conv_epilogue(network: Network) -> Network:
    """Every convolution's epilogue fused, in layer order; a chain that shares a layer with an earlier one (two
    convolutions summed by one Add) is looked at again on the rewritten network."""
    return fuse_rounds(network, {"Conv": _fuse_one})

"""Recognise a cyclic shift written as two Slices and a Concat (``torch.roll`` as the exporters write it) and make
it one Gather with constant indices.

torch.roll(x, k, dim) exports as Concat(Slice(x, [n - k, n) along dim), Slice(x, [0, n - k) along dim), dim):
three layers, two of them copies into buffers that only the Concat reads. Swin shifts every other block's
windows with such rolls, on two axes, before and after its attention: in swin_t that is 24 rolls. One Gather
along ``dim`` with the constant indices [s, ..., n - 1, 0, ..., s - 1] reads each element once and writes it
once, and moves the same bits (a Gather copies), so the engine computes exactly what the unfused layers did.

Both Slices must read the same tensor, with steps of 1, cut only ``dim`` (every other axis whole), be read by the
Concat alone and not be network outputs; the first must start where the second ends, and together cover ``dim``.
"""

from __future__ import annotations

import numpy as np

from reprobuild.ir import Layer, Network
from reprobuild.passes.pattern import GraphIndex, fresh_name, fuse_rounds

VERSION = 1


def _cut(index: GraphIndex, layer: Layer | None, axis: int) -> tuple[str, int, int] | None:
    """(source, start, length) of a Slice that takes a contiguous run of ``axis`` and every other axis whole."""
    if layer is None or layer.op != "Slice" or len(layer.inputs) != 1 or index.is_output(layer.outputs[0]):
        return None
    if not index.single_use(layer.outputs[0]):
        return None
    src, out = index.tensor(layer.inputs[0]).shape, index.tensor(layer.outputs[0]).shape
    starts, steps = layer.attr("starts"), layer.attr("steps")
    if starts is None or steps is None or len(src) != len(out) or len(starts) != len(src):
        return None
    if any(int(s) != 1 for s in steps):
        return None
    for d, (n, m, start) in enumerate(zip(src, out, starts)):
        if d != axis and (int(start) != 0 or n != m):
            return None
    return layer.inputs[0], int(starts[axis]), int(out[axis])


def _roll(network: Network, index: GraphIndex, concat: Layer) -> tuple[list[Layer], Layer, dict] | None:
    if len(concat.inputs) != 2 or concat.inputs[0] == concat.inputs[1]:
        return None
    rank = len(index.tensor(concat.outputs[0]).shape)
    axis = int(concat.attr("axis", 0))
    axis = axis + rank if axis < 0 else axis
    slices = [index.producer(t) for t in concat.inputs]
    head, tail = (_cut(index, s, axis) for s in slices)
    if head is None or tail is None or head[0] != tail[0]:
        return None
    n = index.tensor(head[0]).shape[axis]
    shift = head[1]
    if not (0 < shift < n) or head[2] != n - shift or tail[1] != 0 or tail[2] != shift:
        return None
    indices = np.concatenate([np.arange(shift, n), np.arange(0, shift)]).astype(np.int64)
    name = fresh_name(index, concat.name + ":roll")
    fused = [s for s in slices if s is not None] + [concat]
    gather = Layer(concat.name, "Gather", (head[0], name), concat.outputs, (("axis", axis),),
                   tuple(dict.fromkeys(node for layer in fused for node in layer.origin)))
    return fused, gather, {name: indices}


def fuse_roll(network: Network) -> Network:
    """Every two-Slice Concat that is a cyclic shift, as one Gather (module docstring)."""
    return fuse_rounds(network, {"Concat": _roll})

"""Whether a network fits the engine format's caps (``reprobuild.engine.plan``), checked before any work.

The frontend bounds what a model may declare (rank 32, element counts within int64) so that nothing is allocated
for an impossible shape; an engine's caps are tighter (rank 16, each dimension below 2**40, so many layers and
tensors). A network between the two used to reach the serializer and fail there with an AssertionError ("the
builder produced an invalid engine header"), exit 1: a Tile to shape [2**43, 0] holds no element at all, yet its
dimension cannot be written. :func:`check_engine_limits` refuses it with a :class:`ResourceError` (exit 13) naming
the tensor and the layer and ONNX node that make it.
"""

from __future__ import annotations

import math

from reprobuild.core.dtypes import itemsize
from reprobuild.core.errors import ResourceError
from reprobuild.engine.plan import (
    MAX_BINDINGS,
    MAX_DIM,
    MAX_LAYER_TENSORS,
    MAX_LAYERS,
    MAX_RANK,
    MAX_TENSOR_BYTES,
    MAX_TENSORS,
    MAX_WEIGHTS,
)
from reprobuild.ir import Network


def _tensor_problem(shape: tuple[int, ...], dtype: str) -> str | None:
    if len(shape) > MAX_RANK:
        return f"it has {len(shape)} dimensions; an engine tensor has at most {MAX_RANK}"
    if any(d > MAX_DIM for d in shape):
        return f"a dimension of 2**40 or more; an engine tensor's dimensions are at most {MAX_DIM} (2**40 - 1)"
    nbytes = math.prod(shape) * itemsize(dtype)
    if nbytes > MAX_TENSOR_BYTES:
        return f"it would take {nbytes} bytes; an engine tensor takes at most {MAX_TENSOR_BYTES} (2**62 - 1)"
    return None


def check_engine_limits(net: Network) -> None:
    """A ResourceError for the first tensor, or count, of ``net`` that an engine file cannot hold."""
    counts = (("layers", len(net.layers), MAX_LAYERS), ("constants", len(net.constants), MAX_WEIGHTS),
              ("tensors", len(net.tensors), MAX_TENSORS + MAX_WEIGHTS),
              ("network inputs", len(net.inputs), MAX_BINDINGS), ("network outputs", len(net.outputs), MAX_BINDINGS))
    for what, count, cap in counts:
        if count > cap:
            raise ResourceError(f"the network has {count} {what}; an engine holds at most {cap} "
                                "(reprobuild.engine.plan)")
    made_by = {out: layer for layer in net.layers for out in layer.outputs}
    for layer in net.layers:
        if max(len(layer.inputs), len(layer.outputs)) > MAX_LAYER_TENSORS:
            raise ResourceError(f"layer {layer.name!r} ({layer.op}) has {len(layer.inputs)} inputs and "
                                f"{len(layer.outputs)} outputs; an engine layer has at most {MAX_LAYER_TENSORS} each")
    for name in sorted(net.tensors):
        info = net.tensors[name]
        problem = _tensor_problem(tuple(info.shape), info.dtype)
        if problem is None:
            continue
        maker = made_by.get(name)
        where = ("a network input" if name not in net.constants and maker is None else
                 "a constant" if maker is None else
                 f"the output of layer {maker.name!r} ({maker.op}"
                 + (f", from ONNX node(s) {list(maker.origin)}" if maker.origin else "") + ")")
        shape = list(info.shape) if len(info.shape) <= 40 else [*info.shape[:40], "..."]
        raise ResourceError(f"tensor {name!r}, {where}, has shape {shape} ({info.dtype}): {problem}. No engine "
                            "can hold it; check the shapes the model declares and the sizes it gives its nodes")

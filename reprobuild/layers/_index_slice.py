"""Slice and Split: views of contiguous (or strided) ranges, every range fixed when the engine is built.

Slice's canonical attributes are ``starts``, ``ends`` and ``steps`` for *every* axis, clamped as ONNX says and then
made tight, so that two nodes selecting the same elements get the same layer whatever their ONNX form was:

- a slice of n > 0 elements is ``start``, ``end = last + sign(step)`` (``last = start + (n - 1) * step``), so
  ``end`` lies in [0, dim] for a positive step and in [-1, dim - 1] for a negative one, where ``-1`` means "past
  index 0" (Python's ``None`` stop), never "the last element";
- an empty slice is (0, 0, 1); an axis the node does not slice is (0, dim, 1).

One form is refused: an end of INT32_MAX or INT64_MAX with a negative step. ONNX clamps it to the last index (an
empty slice), onnxruntime reads it as "to the beginning"; a model that has it was written for one of the two.

Split's canonical attributes are ``axis`` and ``split``, the size of every output (zero sizes allowed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reprobuild.core.dtypes import ALL
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


class Slice(LayerDef):
    """Version 1 takes starts/ends/axes as attributes; 10+ as inputs, which must be known at build time."""

    op = "Slice"
    version = 2
    num_inputs = (1, 5)
    dtypes = ALL

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        shape = inputs[0].shape
        starts, ends, steps = (tuple(attrs[k]) for k in ("starts", "ends", "steps"))
        if not len(starts) == len(ends) == len(steps) == len(shape):
            raise OpError(f"canonical Slice attributes need one start, end and step per axis of {list(shape)}; "
                          f"got {list(starts)}, {list(ends)}, {list(steps)}")
        out = []
        for dim, start, end, step in zip(shape, starts, ends, steps):
            ok = 0 <= start <= dim and 0 <= end <= dim if step > 0 else \
                step < 0 and 0 <= start < dim and -1 <= end < dim
            if not ok:
                raise OpError(f"the canonical slice ({start}, {end}, {step}) does not fit a dimension of {dim}")
            out.append(max(0, _ceil_div(end - start, step)))
        return [TensorType(tuple(out), inputs[0].dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        index = tuple(slice(s, e if e >= 0 else None, k)
                      for s, e, k in zip(attrs["starts"], attrs["ends"], attrs["steps"]))
        return [inputs[0][index].copy()]


class Split(LayerDef):
    """Sizes come from the ``split`` attribute (before 13), the ``split`` input (1, and 13+; known at build
    time), ``num_outputs`` (18+: chunks of ceil(dim / n), the last one smaller), or else equal parts, one per
    output."""

    op = "Split"
    version = 2
    num_inputs = (1, 2)
    num_outputs = (1, 2**31 - 1)
    dtypes = ALL

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        x, axis, sizes = inputs[0], int(attrs["axis"]), tuple(attrs["split"])
        if not 0 <= axis < x.rank or sum(sizes) != x.shape[axis] or any(s < 0 for s in sizes):
            raise OpError(f"split sizes {list(sizes)} on axis {axis} do not fit the input {list(x.shape)}")
        return [TensorType((*x.shape[:axis], s, *x.shape[axis + 1:]), x.dtype) for s in sizes]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x, axis = inputs[0], int(attrs["axis"])
        out, begin = [], 0
        for size in attrs["split"]:
            index = (slice(None),) * axis + (slice(begin, begin + size),)
            out.append(x[index].copy())
            begin += size
        return out

"""Tensor transforms: ops that move, repeat or select elements without arithmetic.

This module holds the reshaping ones (Transpose, Squeeze, Unsqueeze, Expand, Tile, DepthToSpace,
SpaceToDepth); ``_transform_pad`` has Pad and CenterCropPad, ``_transform_index`` Trilu, OneHot and
ReverseSequence, ``_transform_const`` Range and EyeLike (constants; a Range whose length depends on a dynamic axis
is the layer :class:`Range` here). ``OPS`` lists them all.

Every input that decides an output shape (Squeeze/Unsqueeze axes from version 13, Expand's shape, Tile's
repeats, Pad's pads and axes, ...) must be known when the engine is built and becomes an attribute: axes
non-negative and sorted, shapes resolved. They accept every dtype: moving elements is exact for all of them.

ONNX subtleties:

- Transpose's ``perm`` defaults to the reversed axes.
- Squeeze without axes removes every axis of size 1. An *empty* axes input (version 13+) is refused:
  onnxruntime then removes every size-1 axis and onnx's reference none. An empty axes attribute (before 13)
  means every size-1 axis for both.
- Expand broadcasts both ways: the output shape is the broadcast of the input's and the given shape, so it may
  be larger than the given shape.
- DepthToSpace's DCR (default) and CRD orders; SpaceToDepth has DCR only until version 28, which adds CRD.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reprobuild.core.dtypes import ALL
from reprobuild.layers._transform_index import OneHot, ReverseSequence, Trilu
from reprobuild.layers._transform_pad import Pad
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType, broadcast


class Transpose(LayerDef):
    op = "Transpose"
    version = 2
    dtypes = ALL

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        x, perm = inputs[0], tuple(attrs["perm"])
        if sorted(perm) != list(range(x.rank)):
            raise OpError(f"perm {list(perm)} is not a permutation of the {x.rank} axes of {list(x.shape)}")
        return [TensorType(tuple(x.shape[p] for p in perm), x.dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        return [xp.asarray(xp.transpose(inputs[0], tuple(attrs["perm"])), order="C")]  # keeps a 0-d array 0-d


class Squeeze(LayerDef):
    op = "Squeeze"
    version = 2
    num_inputs = (1, 2)
    dtypes = ALL

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        x, axes = inputs[0], set(attrs["axes"])
        if any(not 0 <= a < x.rank or x.shape[a] != 1 for a in axes):
            raise OpError(f"cannot squeeze axes {sorted(axes)} of shape {list(x.shape)}")
        return [TensorType(tuple(n for d, n in enumerate(x.shape) if d not in axes), x.dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        shape = self.infer(attrs, [TensorType(tuple(inputs[0].shape), "bool")])[0].shape
        return [inputs[0].reshape(shape).copy()]


class Unsqueeze(LayerDef):
    """Canonical ``axes``: positions in the output, non-negative and sorted."""

    op = "Unsqueeze"
    version = 2
    num_inputs = (1, 2)
    dtypes = ALL

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        x, axes = inputs[0], tuple(attrs["axes"])
        rank = x.rank + len(axes)
        if len(set(axes)) != len(axes) or any(not 0 <= a < rank for a in axes):
            raise OpError(f"axes {list(axes)} are not distinct positions in an output of rank {rank}")
        dims = iter(x.shape)
        return [TensorType(tuple(1 if d in axes else next(dims) for d in range(rank)), x.dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        shape = self.infer(attrs, [TensorType(tuple(inputs[0].shape), "bool")])[0].shape
        return [inputs[0].reshape(shape).copy()]


class Expand(LayerDef):
    """Canonical ``shape``: the output shape (the input's and the given shape broadcast together)."""

    op = "Expand"
    num_inputs = (2, 2)
    dtypes = ALL

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        shape = tuple(attrs["shape"])
        if broadcast(inputs[0].shape, shape) != shape:
            raise OpError(f"the input {list(inputs[0].shape)} does not broadcast to {list(shape)}")
        return [TensorType(shape, inputs[0].dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        return [xp.asarray(xp.broadcast_to(inputs[0], tuple(attrs["shape"])), order="C")]  # 0-d stays 0-d


class Range(LayerDef):
    """An integer Range whose length depends on a dynamic axis (``arange(sequence)``: position ids, masks). A Range
    of known length is folded into a constant when the network is parsed and never becomes a layer. Canonical
    attributes: ``start``, ``limit``, ``delta`` (ints, any of them a size of a dynamic axis; ``delta`` nonzero)
    and ``dtype``."""

    op = "Range"
    num_inputs = (0, 0)
    dtypes = ("int16", "int32", "int64")

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        start, limit, delta, dtype = attrs["start"], attrs["limit"], attrs["delta"], str(attrs["dtype"])
        if dtype not in self.dtypes:
            raise OpError(f"dtype {dtype}: a Range layer computes {', '.join(self.dtypes)}")
        if delta == 0:
            raise OpError("delta must be nonzero")
        count = -((start - limit) // delta)  # ceil((limit - start) / delta), exactly
        return [TensorType((count if count > 0 else 0,), dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        (count,) = self.infer(attrs, [])[0].shape
        steps = xp.arange(int(count), dtype=xp.int64) * int(attrs["delta"])
        return [(steps + int(attrs["start"])).astype(str(attrs["dtype"]))]


class Tile(LayerDef):
    op = "Tile"
    num_inputs = (2, 2)
    dtypes = ALL

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        x, repeats = inputs[0], tuple(attrs["repeats"])
        if len(repeats) != x.rank or any(r < 0 for r in repeats):
            raise OpError(f"repeats {list(repeats)} must hold one non-negative count per axis of {list(x.shape)}")
        return [TensorType(tuple(n * r for n, r in zip(x.shape, repeats)), x.dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        return [xp.asarray(xp.tile(inputs[0], tuple(attrs["repeats"])), order="C")]  # 0-d stays 0-d


class _BlockRearrange(LayerDef):
    """DepthToSpace and SpaceToDepth: a reshape to 6-D, a transpose, a reshape back (NCHW input)."""

    dtypes = ALL
    #: the version that added ``mode``
    mode_since = 11

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        x, b = inputs[0], int(attrs["blocksize"])
        if x.rank != 4 or b < 1 or str(attrs["mode"]) not in ("DCR", "CRD"):
            raise OpError(f"needs a 4-D input (N, C, H, W), blocksize >= 1 and mode DCR or CRD; got "
                          f"{list(x.shape)}, blocksize {b}, mode {attrs['mode']!r}")
        return [TensorType(self.out_shape(x.shape, b), x.dtype)]

    def out_shape(self, shape: tuple[int, ...], b: int) -> tuple[int, ...]:
        raise NotImplementedError


class DepthToSpace(_BlockRearrange):
    op = "DepthToSpace"
    version = 2

    def out_shape(self, shape: tuple[int, ...], b: int) -> tuple[int, ...]:
        n, c, h, w = shape
        if c % (b * b):
            raise OpError(f"the {c} channels are not a multiple of blocksize^2 = {b * b}")
        return (n, c // (b * b), h * b, w * b)

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x, b = inputs[0], int(attrs["blocksize"])
        n, c, h, w = x.shape
        if attrs["mode"] == "DCR":
            y = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
        else:
            y = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
        return [xp.ascontiguousarray(y).reshape(n, c // (b * b), h * b, w * b)]


class SpaceToDepth(_BlockRearrange):
    op = "SpaceToDepth"
    version = 2
    mode_since = 28

    def out_shape(self, shape: tuple[int, ...], b: int) -> tuple[int, ...]:
        n, c, h, w = shape
        if h % b or w % b:
            raise OpError(f"the spatial size {h}x{w} is not a multiple of blocksize {b}")
        return (n, c * b * b, h // b, w // b)

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x, b = inputs[0], int(attrs["blocksize"])
        n, c, h, w = x.shape
        y = x.reshape(n, c, h // b, b, w // b, b)
        y = y.transpose(0, 3, 5, 1, 2, 4) if attrs["mode"] == "DCR" else y.transpose(0, 1, 3, 5, 2, 4)
        return [xp.ascontiguousarray(y).reshape(n, c * b * b, h // b, w // b)]


LAYERS = (DepthToSpace(), Expand(), OneHot(), Pad(), Range(), ReverseSequence(), SpaceToDepth(), Squeeze(), Tile(),
          Transpose(), Trilu(), Unsqueeze())

"""Tensor transforms: ops that move, repeat or select elements without arithmetic.

This module holds the reshaping ones (Transpose, Squeeze, Unsqueeze, Expand, Tile, DepthToSpace,
SpaceToDepth); ``_transform_pad`` has Pad and CenterCropPad, ``_transform_index`` Trilu, OneHot and
ReverseSequence, ``_transform_const`` Range and EyeLike (constants). ``OPS`` lists them all.

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
from reprobuild.ops._transform_const import EyeLike, Range
from reprobuild.ops._transform_index import OneHot, ReverseSequence, Trilu
from reprobuild.ops._transform_pad import CenterCropPad, Pad
from reprobuild.ops.base import (
    Attrs,
    Node,
    OpDef,
    OpError,
    TensorType,
    axes_in_range,
    broadcast,
    ints,
)

_DATA_VERSIONS = (1, 13, 21, 23, 24, 25)  # the versions that only add dtypes


class Transpose(OpDef):
    op, versions = "Transpose", _DATA_VERSIONS
    version = 2
    dtypes = ALL

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        x = node.input(0)
        assert x is not None
        return {"perm": ints(attrs["perm"]) if "perm" in attrs else tuple(reversed(range(x.rank)))}

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        x, perm = inputs[0], tuple(attrs["perm"])
        if sorted(perm) != list(range(x.rank)):
            raise OpError(f"perm {list(perm)} is not a permutation of the {x.rank} axes of {list(x.shape)}")
        return [TensorType(tuple(x.shape[p] for p in perm), x.dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        return [xp.asarray(xp.transpose(inputs[0], tuple(attrs["perm"])), order="C")]  # keeps a 0-d array 0-d


class Squeeze(OpDef):
    op, versions = "Squeeze", (1, 11, 13, 21, 23, 24, 25)
    version = 2
    num_inputs = (1, 2)
    dtypes = ALL

    def convert(self, node: Node) -> None:
        x = node.input(0)
        assert x is not None
        if node.version < 13:
            axes = ints(node.attr("axes")) if node.has_attr("axes") else ()
        elif node.input(1) is not None:
            axes = ints(node.static(1, "the axes"))
            if not axes:
                raise node.fail("the axes input is empty; onnxruntime then squeezes every axis of size 1 and "
                                "onnx's reference none: leave the input out to squeeze every size-1 axis")
        else:
            axes = ()
        if axes:
            resolved = axes_in_range(axes, x.rank)
            wide = [a for a in resolved if x.shape[a] != 1]
            if wide:
                raise node.fail(f"cannot squeeze axes {wide} of shape {list(x.shape)}: their size is not 1")
        else:
            resolved = tuple(d for d, n in enumerate(x.shape) if n == 1)
        node.emit({"axes": tuple(sorted(resolved))}, inputs=[0])

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        x, axes = inputs[0], set(attrs["axes"])
        if any(not 0 <= a < x.rank or x.shape[a] != 1 for a in axes):
            raise OpError(f"cannot squeeze axes {sorted(axes)} of shape {list(x.shape)}")
        return [TensorType(tuple(n for d, n in enumerate(x.shape) if d not in axes), x.dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        shape = self.infer(attrs, [TensorType(tuple(inputs[0].shape), "bool")])[0].shape
        return [inputs[0].reshape(shape).copy()]


class Unsqueeze(OpDef):
    """Canonical ``axes``: positions in the output, non-negative and sorted."""

    op, versions = "Unsqueeze", (1, 11, 13, 21, 23, 24, 25)
    version = 2
    num_inputs = (1, 2)
    dtypes = ALL

    def convert(self, node: Node) -> None:
        x = node.input(0)
        assert x is not None
        if node.version < 13:
            if not node.has_attr("axes"):
                raise node.fail("the attribute 'axes' is required")
            axes = ints(node.attr("axes"))
        else:
            axes = ints(node.static(1, "the axes"))
        resolved = axes_in_range(axes, x.rank + len(axes))
        node.emit({"axes": tuple(sorted(resolved))}, inputs=[0])

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


class Expand(OpDef):
    """Canonical ``shape``: the output shape (the input's and the given shape broadcast together)."""

    op, versions = "Expand", (8, 13)
    num_inputs = (2, 2)
    dtypes = ALL

    def convert(self, node: Node) -> None:
        x = node.input(0)
        assert x is not None
        shape = ints(node.static(1, "the shape"))
        if any(d < 0 for d in shape):
            raise node.fail(f"shape {list(shape)} has a negative dimension")
        node.emit({"shape": broadcast(x.shape, shape)}, inputs=[0])

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        shape = tuple(attrs["shape"])
        if broadcast(inputs[0].shape, shape) != shape:
            raise OpError(f"the input {list(inputs[0].shape)} does not broadcast to {list(shape)}")
        return [TensorType(shape, inputs[0].dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        return [xp.asarray(xp.broadcast_to(inputs[0], tuple(attrs["shape"])), order="C")]  # 0-d stays 0-d


class Tile(OpDef):
    op, versions = "Tile", (6, 13)
    num_inputs = (2, 2)
    dtypes = ALL

    def convert(self, node: Node) -> None:
        node.emit({"repeats": ints(node.static(1, "the repeats"))}, inputs=[0])

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        x, repeats = inputs[0], tuple(attrs["repeats"])
        if len(repeats) != x.rank or any(r < 0 for r in repeats):
            raise OpError(f"repeats {list(repeats)} must hold one non-negative count per axis of {list(x.shape)}")
        return [TensorType(tuple(n * r for n, r in zip(x.shape, repeats)), x.dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        return [xp.asarray(xp.tile(inputs[0], tuple(attrs["repeats"])), order="C")]  # 0-d stays 0-d


class _BlockRearrange(OpDef):
    """DepthToSpace and SpaceToDepth: a reshape to 6-D, a transpose, a reshape back (NCHW input)."""

    dtypes = ALL
    #: the version that added ``mode``
    mode_since = 11

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        mode = str(attrs["mode"]) if node.version >= self.mode_since else "DCR"
        if mode not in ("DCR", "CRD"):
            raise node.fail(f"mode {mode!r} is not DCR or CRD")
        return {"blocksize": int(attrs["blocksize"]), "mode": mode}

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        x, b = inputs[0], int(attrs["blocksize"])
        if x.rank != 4 or b < 1 or str(attrs["mode"]) not in ("DCR", "CRD"):
            raise OpError(f"needs a 4-D input (N, C, H, W), blocksize >= 1 and mode DCR or CRD; got "
                          f"{list(x.shape)}, blocksize {b}, mode {attrs['mode']!r}")
        return [TensorType(self.out_shape(x.shape, b), x.dtype)]

    def out_shape(self, shape: tuple[int, ...], b: int) -> tuple[int, ...]:
        raise NotImplementedError


class DepthToSpace(_BlockRearrange):
    op, versions = "DepthToSpace", (1, 11, 13, 28)
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
    op, versions = "SpaceToDepth", (1, 13, 28)
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


OPS = (CenterCropPad(), DepthToSpace(), Expand(), EyeLike(), OneHot(), Pad(), Range(), ReverseSequence(),
       SpaceToDepth(), Squeeze(), Tile(), Transpose(), Trilu(), Unsqueeze())

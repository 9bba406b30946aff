"""The ONNX half of :mod:`reprobuild.layers.op_transform` (whose docstring says what the layers compute): the ONNX
versions each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from typing import Any

from reprobuild.core import symbolic
from reprobuild.layers import op_transform as layer
from reprobuild.layers.base import axes_in_range, broadcast, ints
from reprobuild.ops._transform_const import EyeLike, Range
from reprobuild.ops._transform_index import OneHot, ReverseSequence, Trilu
from reprobuild.ops._transform_pad import CenterCropPad, Pad
from reprobuild.ops.base import Node, OpDef

_DATA_VERSIONS = (1, 13, 21, 23, 24, 25)  # the versions that only add dtypes


class Transpose(OpDef, layer.Transpose):
    versions = _DATA_VERSIONS

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        x = node.input(0)
        assert x is not None
        return {"perm": ints(attrs["perm"]) if "perm" in attrs else tuple(reversed(range(x.rank)))}


class Squeeze(OpDef, layer.Squeeze):
    versions = (1, 11, 13, 21, 23, 24, 25)

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


class Unsqueeze(OpDef, layer.Unsqueeze):
    versions = (1, 11, 13, 21, 23, 24, 25)

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


class Expand(OpDef, layer.Expand):
    versions = (8, 13)

    def convert(self, node: Node) -> None:
        x = node.input(0)
        assert x is not None
        shape = symbolic.sizes(node.static(1, "the shape"))
        if any(d < 0 for d in shape):
            raise node.fail(f"shape {list(shape)} has a negative dimension")
        node.emit({"shape": symbolic.broadcast(x.shape, shape) if symbolic.is_symbolic((x.shape, shape))
                   else broadcast(x.shape, shape)}, inputs=[0])


class Tile(OpDef, layer.Tile):
    versions = (6, 13)

    def convert(self, node: Node) -> None:
        node.emit({"repeats": ints(node.static(1, "the repeats"))}, inputs=[0])


class _BlockRearrange(OpDef, layer._BlockRearrange):
    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        mode = str(attrs["mode"]) if node.version >= self.mode_since else "DCR"
        if mode not in ("DCR", "CRD"):
            raise node.fail(f"mode {mode!r} is not DCR or CRD")
        return {"blocksize": int(attrs["blocksize"]), "mode": mode}


class DepthToSpace(_BlockRearrange, layer.DepthToSpace):
    versions = (1, 11, 13, 28)


class SpaceToDepth(_BlockRearrange, layer.SpaceToDepth):
    versions = (1, 13, 28)


OPS = (CenterCropPad(), DepthToSpace(), Expand(), EyeLike(), OneHot(), Pad(), Range(), ReverseSequence(),
       SpaceToDepth(), Squeeze(), Tile(), Transpose(), Trilu(), Unsqueeze())

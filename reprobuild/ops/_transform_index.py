"""The ONNX half of :mod:`reprobuild.layers._transform_index` (whose docstring says what the layers compute): the ONNX
versions each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reprobuild.layers import _transform_index as layer
from reprobuild.layers.base import scalar
from reprobuild.ops.base import Node, OpDef


class Trilu(OpDef, layer.Trilu):
    versions = (14,)

    def convert(self, node: Node) -> None:
        k = int(scalar(node.static(1, "the diagonal k"))) if node.input(1) is not None else 0
        node.emit({"k": k, "upper": int(int(node.attr("upper")) != 0)}, inputs=[0])


class OneHot(OpDef, layer.OneHot):
    versions = (9, 11, 28)

    def convert(self, node: Node) -> None:
        indices = node.input(0)
        assert indices is not None
        depth = np.asarray(node.static(1, "the depth"))
        if depth.size != 1 or depth.dtype.kind not in "biuf" or not np.isfinite(depth.astype(np.float64)).all():
            raise node.fail(f"depth must be one finite number; got {depth.size} value(s) of {depth.dtype}")
        count = int(depth.astype(np.float64).reshape(-1)[0])
        if count < 1:
            raise node.fail(f"depth is {count}; it must be at least 1")
        axis = int(node.attr("axis"))
        if not -indices.rank - 1 <= axis <= indices.rank:
            raise node.fail(f"axis {axis} is out of range for indices of rank {indices.rank} (the output has "
                            f"rank {indices.rank + 1})")
        node.emit({"axis": axis % (indices.rank + 1), "depth": count}, inputs=[0, 2])


class ReverseSequence(OpDef, layer.ReverseSequence):
    versions = (10, 28)

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        pair = (int(attrs["batch_axis"]), int(attrs["time_axis"]))
        if pair not in ((1, 0), (0, 1)):
            raise node.fail(f"batch_axis and time_axis are {pair}; ONNX allows (1, 0) or (0, 1)")
        return {"batch_axis": pair[0], "time_axis": pair[1]}

"""The ONNX half of :mod:`reprobuild.layers._norm_scale` (whose docstring says what the layers compute): the ONNX
versions each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from typing import Any

from reprobuild.layers import _norm_scale as layer
from reprobuild.layers._norm_stats import check_stash_type
from reprobuild.layers.base import OpError, axis_in_range
from reprobuild.ops.base import Node, OpDef


class RMSNormalization(OpDef, layer.RMSNormalization):
    versions = (23,)

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        x = node.input(0)
        assert x is not None
        if x.rank == 0:
            raise OpError("needs an input of rank >= 1; got a scalar")
        check_stash_type(int(attrs["stash_type"]))
        return {"axis": axis_in_range(int(attrs["axis"]), x.rank), "epsilon": float(attrs["epsilon"]),
                "stash_type": int(attrs["stash_type"])}


class LpNormalization(OpDef, layer.LpNormalization):
    versions = (1, 22)

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        x = node.input(0)
        assert x is not None
        if int(attrs["p"]) not in (1, 2):
            raise node.fail(f"p = {attrs['p']}; ONNX's LpNormalization supports only p = 1 and p = 2")
        if x.rank == 0:
            raise OpError("needs an input of rank >= 1; got a scalar")
        return {"axis": axis_in_range(int(attrs["axis"]), x.rank), "p": int(attrs["p"])}


class LRN(OpDef, layer.LRN):
    versions = (1, 13)

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        if int(attrs["size"]) < 1:
            raise node.fail(f"size = {attrs['size']}; the window must hold at least one channel")
        return {"alpha": float(attrs["alpha"]), "beta": float(attrs["beta"]), "bias": float(attrs["bias"]),
                "size": int(attrs["size"])}

"""The ONNX half of :mod:`reprobuild.layers.op_norm` (whose docstring says what the layers compute): the ONNX versions
each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from typing import Any

from reprobuild.core.errors import UnsupportedOpError
from reprobuild.layers import op_norm as layer
from reprobuild.layers._norm_stats import check_stash_type
from reprobuild.layers.base import axes_in_range, axis_in_range, ints
from reprobuild.ops._norm_scale import LRN, LpNormalization, RMSNormalization
from reprobuild.ops.base import Node, OpDef


class LayerNormalization(OpDef, layer.LayerNormalization):
    versions = (17,)

    def convert(self, node: Node) -> None:
        x = node.input(0)
        assert x is not None
        if x.rank == 0:
            raise node.fail("needs an input of rank >= 1; got a scalar")
        attrs = {"axis": axis_in_range(int(node.attr("axis")), x.rank), "epsilon": float(node.attr("epsilon")),
                 "stash_type": int(node.attr("stash_type"))}
        check_stash_type(attrs["stash_type"])
        used = [i for i in range(node.num_outputs) if node.output_used(i)]
        try:
            node.emit(attrs, n_outputs=max(used, default=0) + 1)
        except UnsupportedOpError as exc:
            if 2 not in used or 1 in used:
                raise
            raise node.fail("InvStdDev is used but Mean is omitted (an empty output name); a layer cannot skip an "
                            "output: give Mean a name (it may stay unused)") from exc


class GroupNormalization(OpDef, layer.GroupNormalization):
    versions = (18, 21)

    def convert(self, node: Node) -> None:
        x = node.input(0)
        assert x is not None
        groups = int(node.attr("num_groups"))
        stash = int(node.attr("stash_type")) if node.version >= 21 else 1
        per_group = int(node.version < 21 and x.rank >= 2 and groups != x.shape[1])
        attrs = {"epsilon": float(node.attr("epsilon")), "num_groups": groups, "per_group": per_group,
                 "stash_type": stash}
        check_stash_type(stash)
        node.emit(attrs)


class InstanceNormalization(OpDef, layer.InstanceNormalization):
    versions = (6, 22)

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        return {"epsilon": float(attrs["epsilon"])}


class MeanVarianceNormalization(OpDef, layer.MeanVarianceNormalization):
    versions = (9, 13)

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        x = node.input(0)
        assert x is not None
        axes = ints(attrs["axes"])
        if not axes:
            raise node.fail("axes is empty; name the axes to normalize over")
        return {"axes": tuple(sorted(axes_in_range(axes, x.rank)))}


OPS = (GroupNormalization(), InstanceNormalization(), LRN(), LayerNormalization(), LpNormalization(),
       MeanVarianceNormalization(), RMSNormalization())

"""Normalizations. Here those that standardize (subtract a mean, divide by a standard deviation):
LayerNormalization, GroupNormalization, InstanceNormalization and MeanVarianceNormalization; in
``_norm_scale`` those that only divide by a norm: RMSNormalization, LpNormalization and LRN.

Statistics are computed in float32 (float64 for float64 inputs, or ``stash_type`` 11) and results rounded once
(see ``_norm_stats``). ONNX subtleties:

- LayerNormalization's canonical attributes are exactly ``axis`` (non-negative), ``epsilon`` and ``stash_type``;
  the bias input may be left out. Its Mean and InvStdDev outputs have the reduced shape (X's, with 1 from
  ``axis`` on) and the dtype ``stash_type`` names. The layer-norm fusion pass builds one-output layers. A node
  that uses InvStdDev but leaves Mean unnamed is refused: a layer's outputs cannot have a gap.
- GroupNormalization 18 took one scale and bias per *group*, 21 one per *channel* (and added stash_type). The
  canonical attribute ``per_group`` (1 only for version 18 with fewer groups than channels) keeps version 18's
  meaning; version 18 is computed like stash_type 1. (The ONNX checker rejects version 18 as deprecated, so
  models reach the frontend with version 21 only.)
- MeanVarianceNormalization is (x - mean) / (std + 1e-9), the 1e-9 added to the standard deviation as ONNX's
  function body does (which computes the variance as E[x^2] - E[x]^2; here as E[(x - mean)^2], never negative).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reprobuild.core.dtypes import FLOATS
from reprobuild.layers._norm_scale import LRN, LpNormalization, RMSNormalization
from reprobuild.layers._norm_stats import check_broadcasts, check_stash_type, standardize, work_dtype
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType, axes_in_range
from reprobuild.layers.families import Unary

#: MeanVarianceNormalization's epsilon, fixed by ONNX's function body.
MVN_EPSILON = 1e-9


def _rank_at_least(x: TensorType, rank: int, layout: str) -> None:
    if x.rank < rank:
        raise OpError(f"needs an input of rank >= {rank} ({layout}); got shape {list(x.shape)}")


def _per_channel(inputs: Sequence[TensorType], channels: int, names: Sequence[str]) -> None:
    for t, name in zip(inputs, names):
        if t.shape != (channels,):
            raise OpError(f"{name} has shape {list(t.shape)}; it should be [{channels}]")


class LayerNormalization(LayerDef):
    op = "LayerNormalization"
    version = 2
    num_inputs = (2, 3)
    num_outputs = (1, 3)
    dtypes = FLOATS
    same_type = (1, 2)

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        x = inputs[0]
        axis, stash = int(attrs["axis"]), check_stash_type(attrs["stash_type"])
        if not 0 <= axis < x.rank:
            raise OpError(f"axis {axis} is not a dimension of the input {list(x.shape)}")
        for t, name in zip(inputs[1:], ("scale", "bias")):
            check_broadcasts(t, x, name)
        stats = TensorType(x.shape[:axis] + (1,) * (x.rank - axis), stash)
        return [x, stats, stats]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x, axis, stash = inputs[0], int(attrs["axis"]), int(attrs["stash_type"])
        work = work_dtype(xp, x, stash)
        normalized, mean, inv_std = standardize(xp, x.astype(work), range(axis, x.ndim), float(attrs["epsilon"]))
        y = normalized * inputs[1].astype(work, copy=False)
        if len(inputs) > 2:
            y = y + inputs[2].astype(work, copy=False)
        stats = check_stash_type(stash)
        return [y.astype(x.dtype, copy=False), mean.astype(stats), inv_std.astype(stats)]


class GroupNormalization(LayerDef):
    op = "GroupNormalization"
    version = 2
    num_inputs = (3, 3)
    dtypes = FLOATS
    same_type = (1, 2)

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        check_stash_type(attrs["stash_type"])
        x, groups = inputs[0], int(attrs["num_groups"])
        _rank_at_least(x, 2, "N, C, ...")
        if groups < 1 or x.shape[1] % groups:
            raise OpError(f"num_groups = {groups} does not divide the {x.shape[1]} channels")
        per = groups if attrs["per_group"] else x.shape[1]
        _per_channel(inputs[1:], per, ("scale", "bias"))
        return [x]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x, scale, bias = inputs
        groups, work = int(attrs["num_groups"]), work_dtype(xp, x, int(attrs["stash_type"]))
        n, c = x.shape[0], x.shape[1]
        per_group = x.size // max(n * groups, 1)
        grouped = x.astype(work).reshape(n, groups, per_group)
        normalized = standardize(xp, grouped, (2,), float(attrs["epsilon"]))[0].reshape(x.shape)
        s, b = scale.astype(work, copy=False), bias.astype(work, copy=False)
        if attrs["per_group"]:
            s, b = xp.repeat(s, c // groups), xp.repeat(b, c // groups)
        shape = (1, c) + (1,) * (x.ndim - 2)
        return [(normalized * s.reshape(shape) + b.reshape(shape)).astype(x.dtype, copy=False)]


class InstanceNormalization(LayerDef):
    op = "InstanceNormalization"
    version = 2
    num_inputs = (3, 3)
    dtypes = FLOATS
    same_type = (1, 2)

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        x = inputs[0]
        _rank_at_least(x, 3, "N, C, D1, ...")
        _per_channel(inputs[1:], x.shape[1], ("scale", "B"))
        return [x]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x, scale, bias = inputs
        work = work_dtype(xp, x)
        normalized = standardize(xp, x.astype(work), range(2, x.ndim), float(attrs["epsilon"]))[0]
        shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        y = normalized * scale.astype(work).reshape(shape) + bias.astype(work).reshape(shape)
        return [y.astype(x.dtype, copy=False)]


class MeanVarianceNormalization(Unary):
    op, dtypes = "MeanVarianceNormalization", FLOATS
    version = 2
    upcast = False

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        axes = tuple(attrs["axes"])
        if not axes or axes_in_range(axes, inputs[0].rank) != axes:
            raise OpError(f"axes {list(axes)} must be distinct, non-negative dimensions of the input "
                          f"{list(inputs[0].shape)}")
        return super().infer(attrs, inputs)

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        work = work_dtype(xp, x)
        xw = x.astype(work)
        axes = tuple(attrs["axes"])
        deviation = xw - xw.mean(axis=axes, keepdims=True)
        std = xp.sqrt((deviation * deviation).mean(axis=axes, keepdims=True))
        return deviation / (std + MVN_EPSILON)


LAYERS = (GroupNormalization(), InstanceNormalization(), LRN(), LayerNormalization(), LpNormalization(),
          MeanVarianceNormalization(), RMSNormalization())

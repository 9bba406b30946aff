"""Pooling over 1, 2 or 3 spatial dimensions: MaxPool (with its Indices output), AveragePool, LpPool,
GlobalAveragePool, GlobalMaxPool, GlobalLpPool, and MaxUnpool.

Canonical attributes of the windowed pools: ``kernel_shape``, ``pads`` (begins, then ends), ``strides``,
``dilations``, ``ceil_mode``, and ``count_include_pad`` for AveragePool, ``p`` for LpPool. A MaxPool whose
Indices output is used is a layer with two outputs and one more attribute, ``storage_order``; hand-written pool
tactics compute only Y, and are kept off such layers by the Indices output's dtype (int64).

LpPool is the p-norm of each window, padding counting as 0 (as onnxruntime and ONNX's test data compute it; the
ONNX reference rescales an average instead, which differs next to the padding). MaxUnpool takes its output shape
as a build-time input; see ``_nn_pool`` for how it writes repeated indices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from reprobuild.core.dtypes import FLOATS
from reprobuild.layers._nn_pool import argmax_windows, scatter_last_wins, tap_maps
from reprobuild.layers._window import extra_end, output_spatial, padded, tap_view, taps
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType
from reprobuild.layers.families import float_compute_type


class _WindowPool(LayerDef):
    dtypes = FLOATS
    has_dilations_since = 1

    def extra_attrs(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return {}

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        x = inputs[0].shape
        kernel = tuple(attrs["kernel_shape"])
        if len(x) != len(kernel) + 2:
            raise OpError(f"input {list(x)} does not have {len(kernel)} spatial dimensions (kernel {list(kernel)})")
        out = output_spatial(x[2:], kernel, attrs, bool(attrs["ceil_mode"]))
        return [TensorType((x[0], x[1], *out), inputs[0].dtype)]

    def windows(self, xp: Any, x: Any, attrs: Attrs, fill: Any) -> tuple[list[Any], tuple[int, ...], Any]:
        """The strided view of every kernel tap over the padded input, the output spatial shape, and the
        padded input."""
        kernel = tuple(attrs["kernel_shape"])
        out = output_spatial(x.shape[2:], kernel, attrs, bool(attrs["ceil_mode"]))
        src = padded(xp, x, attrs["pads"], extra_end(x.shape[2:], kernel, attrs, out), fill)
        return [tap_view(src, t, attrs["strides"], attrs["dilations"], out) for t in taps(kernel)], out, src


class MaxPool(_WindowPool):
    op = "MaxPool"
    version = 2
    num_outputs = (1, 2)
    dtypes = (*FLOATS, "int8", "uint8")
    has_dilations_since = 10

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        y = super().infer(attrs, inputs)[0]
        return [y, TensorType(y.shape, "int64")] if "storage_order" in attrs else [y]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x = inputs[0]
        fill = np.iinfo(x.dtype).min if np.dtype(x.dtype).kind in "iu" else -np.inf
        views, out, _ = self.windows(xp, x, attrs, fill)
        if "storage_order" in attrs:
            maps = tap_maps(x.shape[2:], attrs["kernel_shape"], attrs, out, int(attrs["storage_order"]))
            plane = int(np.prod(x.shape[2:], dtype=np.int64))
            y, indices = argmax_windows(xp, views, maps, fill, x.shape[0], x.shape[1], plane)
            return [y.astype(x.dtype, copy=False), indices]
        result = views[0].copy()
        for v in views[1:]:
            result = xp.maximum(result, v)
        return [result]


class AveragePool(_WindowPool):
    op = "AveragePool"
    version = 2
    has_dilations_since = 19

    def extra_attrs(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return {"count_include_pad": int(attrs["count_include_pad"])}

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x = inputs[0]
        work = float_compute_type(xp, x)
        views, out, _ = self.windows(xp, x.astype(work, copy=False), attrs, 0.0)
        total = views[0].copy()
        for v in views[1:]:
            total = total + v
        return [(total / xp.asarray(self.divisors(x.shape, attrs, out), dtype=work)).astype(x.dtype, copy=False)]

    @staticmethod
    def divisors(shape: Sequence[int], attrs: Attrs, out: Sequence[int]) -> np.ndarray:
        """How many elements each output averages (host-side): the window clipped to the input, plus the
        explicit pads when count_include_pad is set (never the extra that ceil_mode adds)."""
        nd = len(shape) - 2
        pads = attrs["pads"]
        ones = np.ones((1, 1, *shape[2:]), dtype=np.float64)
        window_attrs: Attrs = attrs
        if attrs["count_include_pad"]:
            ones = np.pad(ones, [(0, 0), (0, 0)] + [(pads[i], pads[i + nd]) for i in range(nd)], constant_values=1.0)
            window_attrs = {**attrs, "pads": (0,) * (2 * nd)}
        kernel = tuple(attrs["kernel_shape"])
        src = padded(np, ones, window_attrs["pads"], extra_end(ones.shape[2:], kernel, window_attrs, out), 0.0)
        count = sum(tap_view(src, t, attrs["strides"], attrs["dilations"], out) for t in taps(kernel))
        return np.asarray(count).reshape(out)


def _norm_order(p: Any) -> int:
    if int(p) < 1:
        raise OpError(f"p={p}; the p-norm needs p >= 1")
    return int(p)


class LpPool(_WindowPool):
    op = "LpPool"
    version = 2
    has_dilations_since = 18

    def extra_attrs(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return {"p": _norm_order(attrs["p"])}

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        _norm_order(attrs["p"])  # an engine's layer is checked here too: p = 0 divided by zero when it ran
        return super().infer(attrs, inputs)

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x = inputs[0]
        p = int(attrs["p"])
        powers = xp.abs(x.astype(float_compute_type(xp, x), copy=False)) ** p
        views, _, _ = self.windows(xp, powers, attrs, 0.0)
        total = views[0].copy()
        for v in views[1:]:
            total = total + v
        return [(total ** (1.0 / p)).astype(x.dtype, copy=False)]


class _GlobalPool(LayerDef):
    dtypes = FLOATS

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        x = inputs[0].shape
        if len(x) < 3:
            raise OpError(f"needs an input of rank >= 3 (N, C, spatial...); got {list(x)}")
        return [TensorType((x[0], x[1]) + (1,) * (len(x) - 2), inputs[0].dtype)]


class GlobalAveragePool(_GlobalPool):
    op = "GlobalAveragePool"

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x = inputs[0]
        axes = tuple(range(2, x.ndim))
        mean = xp.mean(x.astype(float_compute_type(xp, x), copy=False), axis=axes, keepdims=True)
        return [mean.astype(x.dtype, copy=False)]


class GlobalMaxPool(_GlobalPool):
    op = "GlobalMaxPool"

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x = inputs[0]
        return [xp.max(x, axis=tuple(range(2, x.ndim)), keepdims=True)]


class GlobalLpPool(_GlobalPool):
    op = "GlobalLpPool"
    version = 2

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        _norm_order(attrs["p"])
        return super().infer(attrs, inputs)

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x, p = inputs[0], int(attrs["p"])
        powers = xp.abs(x.astype(float_compute_type(xp, x), copy=False)) ** p
        total = xp.sum(powers, axis=tuple(range(2, x.ndim)), keepdims=True)
        return [(total ** (1.0 / p)).astype(x.dtype, copy=False)]


class MaxUnpool(LayerDef):
    """Canonical attributes: ``kernel_shape``, ``pads``, ``strides`` and the whole ``output_shape``.

    An ``output_shape`` input other than the shape the attributes give is refused: the ONNX reference (and its
    test data) then reads the indices in the attributes' shape and pads the end with zeros, onnxruntime and PyTorch
    read them in ``output_shape``."""

    op = "MaxUnpool"
    version = 2
    num_inputs = (2, 3)
    dtypes = FLOATS

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        x, indices = inputs
        if indices.dtype != "int64" or indices.shape != x.shape:
            raise OpError(f"indices are {indices.dtype} {list(indices.shape)}; expected int64 of the input's shape "
                          f"{list(x.shape)}")
        return [TensorType(tuple(attrs["output_shape"]), x.dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        shape = tuple(attrs["output_shape"])
        size = int(np.prod(shape, dtype=np.int64))
        return [scatter_last_wins(xp, inputs[0], inputs[1], size).reshape(shape)]


LAYERS = (AveragePool(), GlobalAveragePool(), GlobalLpPool(), GlobalMaxPool(), LpPool(), MaxPool(), MaxUnpool())

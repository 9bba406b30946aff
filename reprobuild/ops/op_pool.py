"""Pooling over 1, 2 or 3 spatial dimensions: MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool.

Canonical attributes of the windowed pools: ``kernel_shape``, ``pads`` (begins, then ends), ``strides``,
``dilations``, ``ceil_mode``, and ``count_include_pad`` for AveragePool.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from reprobuild.dtypes import FLOATS
from reprobuild.ops._window import extra_end, output_spatial, padded, resolve_window, tap_view, taps
from reprobuild.ops.base import Attr, Attrs, Node, OpDef, OpError, TensorType, ints
from reprobuild.ops.families import float_compute_type

_WINDOW = {
    "auto_pad": Attr("string", "NOTSET"),
    "kernel_shape": Attr("ints"),
    "pads": Attr("ints"),
    "strides": Attr("ints"),
}


class _WindowPool(OpDef):
    dtypes = FLOATS
    has_dilations_since = 1

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        x = node.input(0)
        assert x is not None
        if x.rank < 3:
            raise OpError(f"needs an input of rank >= 3 (N, C, spatial...); got {list(x.shape)}")
        if "kernel_shape" not in attrs:
            raise OpError("the kernel_shape attribute is required")
        kernel = ints(attrs["kernel_shape"])
        window = resolve_window(node, x.shape[2:], kernel, with_dilations=node.version >= self.has_dilations_since)
        return {**window, "kernel_shape": kernel, "ceil_mode": int(attrs.get("ceil_mode", 0)),
                **self.extra_attrs(attrs)}

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

    def windows(self, xp: Any, x: Any, attrs: Attrs, fill: float) -> tuple[list[Any], tuple[int, ...], Any]:
        """The strided view of every kernel tap over the padded input, the output spatial shape, and the
        padded input."""
        kernel = tuple(attrs["kernel_shape"])
        out = output_spatial(x.shape[2:], kernel, attrs, bool(attrs["ceil_mode"]))
        src = padded(xp, x, attrs["pads"], extra_end(x.shape[2:], kernel, attrs, out), fill)
        return [tap_view(src, t, attrs["strides"], attrs["dilations"], out) for t in taps(kernel)], out, src


class MaxPool(_WindowPool):
    op, versions = "MaxPool", (8, 10, 11, 12, 22)
    attributes = {**_WINDOW, "ceil_mode": Attr("int", 0, since=10), "dilations": Attr("ints", since=10),
                  "storage_order": Attr("int", 0, since=8)}
    num_outputs = (1, 2)
    has_dilations_since = 10

    def convert(self, node: Node) -> None:
        if node.output_used(1):
            raise node.fail("the Indices output is not supported; only Y may be used")
        if int(node.attr("storage_order")) != 0:
            raise node.fail("storage_order=1 only affects the Indices output, which is not supported")
        node.emit(self.canonical_attrs(node, self.node_attrs(node)), n_outputs=1)

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x = inputs[0]
        views, _, _ = self.windows(xp, x, attrs, -np.inf)
        out = views[0].copy()
        for v in views[1:]:
            out = xp.maximum(out, v)
        return [out]


class AveragePool(_WindowPool):
    op, versions = "AveragePool", (7, 10, 11, 19, 22)
    attributes = {**_WINDOW, "ceil_mode": Attr("int", 0, since=10), "count_include_pad": Attr("int", 0),
                  "dilations": Attr("ints", since=19)}
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


class _GlobalPool(OpDef):
    versions = (1, 22)
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


OPS = (AveragePool(), GlobalAveragePool(), GlobalMaxPool(), MaxPool())

"""The ONNX half of :mod:`reprobuild.layers.op_pool` (whose docstring says what the layers compute): the ONNX versions
each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from typing import Any

from reprobuild.layers import op_pool as layer
from reprobuild.layers._window import output_spatial
from reprobuild.layers.base import OpError, ints
from reprobuild.layers.op_pool import _norm_order
from reprobuild.ops._nn_pool import empty_windows
from reprobuild.ops._window import resolve_window
from reprobuild.ops.base import Node, OpDef


class _WindowPool(OpDef, layer._WindowPool):
    checks_required = ("kernel_shape",)  # canonical_attrs checks the input's rank first, then asks for it

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        x = node.input(0)
        assert x is not None
        if x.rank < 3:
            raise OpError(f"needs an input of rank >= 3 (N, C, spatial...); got {list(x.shape)}")
        if "kernel_shape" not in attrs:
            raise OpError("the kernel_shape attribute is required")
        kernel = ints(attrs["kernel_shape"])
        window = resolve_window(node, x.shape[2:], kernel, negative_same="refuse",
                                with_dilations=node.version >= self.has_dilations_since)
        return {**window, "kernel_shape": kernel, "ceil_mode": int(attrs.get("ceil_mode", 0)),
                **self.extra_attrs(attrs)}


class MaxPool(_WindowPool, layer.MaxPool):
    versions = (1, 8, 10, 11, 12, 22)

    def convert(self, node: Node) -> None:
        x = node.input(0)
        assert x is not None
        if x.dtype in ("int8", "uint8") and node.version < 12:
            raise node.fail(f"{x.dtype} input needs MaxPool version 12 or later (opset >= 12); this node is "
                            f"version {node.version}")
        attrs = self.canonical_attrs(node, self.node_attrs(node))
        kernel = attrs["kernel_shape"]
        out = output_spatial(x.shape[2:], kernel, attrs, bool(attrs["ceil_mode"]))
        bad = empty_windows(x.shape[2:], kernel, attrs, out)
        if bad:
            raise node.fail(f"along spatial dimension(s) {bad} some window lies entirely in the padding (pads "
                            f"{list(attrs['pads'])}, kernel {list(kernel)}), where ONNX defines no maximum")
        if not node.output_used(1):
            node.emit(attrs, n_outputs=1)
            return
        order = int(node.attr("storage_order"))
        if order not in (0, 1):
            raise node.fail(f"storage_order={order}; it must be 0 (row major) or 1 (column major)")
        node.emit({**attrs, "storage_order": order}, n_outputs=2)


class AveragePool(_WindowPool, layer.AveragePool):
    versions = (7, 10, 11, 19, 22)


class LpPool(_WindowPool, layer.LpPool):
    versions = (2, 11, 18, 22)


class _GlobalPool(OpDef, layer._GlobalPool):
    versions = (1, 22)


class GlobalAveragePool(_GlobalPool, layer.GlobalAveragePool):
    pass


class GlobalMaxPool(_GlobalPool, layer.GlobalMaxPool):
    pass


class GlobalLpPool(_GlobalPool, layer.GlobalLpPool):
    versions = (2, 22)

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        return {"p": _norm_order(attrs["p"])}


class MaxUnpool(OpDef, layer.MaxUnpool):
    versions = (9, 11, 22)

    def convert(self, node: Node) -> None:
        x = node.input(0)
        assert x is not None
        if x.rank < 3 or not node.has_attr("kernel_shape"):
            raise node.fail(f"needs an input of rank >= 3 (N, C, spatial...) and kernel_shape; got {list(x.shape)}")
        kernel, nd = ints(node.attr("kernel_shape")), x.rank - 2
        strides = ints(node.attr("strides")) if node.has_attr("strides") else (1,) * nd
        pads = ints(node.attr("pads")) if node.has_attr("pads") else (0,) * (2 * nd)
        if len(kernel) != nd or len(strides) != nd or len(pads) != 2 * nd or min(strides) < 1 or min(kernel) < 1 \
                or min(pads) < 0:
            raise node.fail(f"kernel_shape {list(kernel)}, strides {list(strides)}, pads {list(pads)} do not fit "
                            f"{nd} spatial dimensions")
        shape = (*x.shape[:2], *((x.shape[2 + d] - 1) * strides[d] - pads[d] - pads[nd + d] + kernel[d]
                                 for d in range(nd)))
        if node.input(2) is not None:
            given = ints(node.static(2, "output_shape"))
            if given != shape:
                raise node.fail(
                    f"output_shape {list(given)} differs from the shape {list(shape)} that kernel_shape, strides and "
                    "pads give: the ONNX reference then reads the indices in the latter and pads the end with "
                    "zeros, onnxruntime and PyTorch read them in output_shape")
        if min(shape) < 1:
            raise node.fail(f"the output shape {list(shape)} is empty")
        node.emit({"kernel_shape": kernel, "output_shape": shape, "pads": pads, "strides": strides}, inputs=[0, 1])


OPS = (AveragePool(), GlobalAveragePool(), GlobalLpPool(), GlobalMaxPool(), LpPool(), MaxPool(), MaxUnpool())

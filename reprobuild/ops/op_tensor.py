"""The ONNX half of :mod:`reprobuild.layers.op_tensor` (whose docstring says what the layers compute): the ONNX versions
each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from reprobuild.core import symbolic
from reprobuild.core.dtypes import ALL
from reprobuild.layers import op_tensor as layer
from reprobuild.layers.base import Attrs, OpError, TensorType, axis_in_range, ints
from reprobuild.ops._constant_limits import check_constant_size, check_constant_value
from reprobuild.ops.attr import ABSENT, Attr
from reprobuild.ops.base import BuildTimeOp, Node, OpDef


class Identity(OpDef, layer.Identity):
    versions = (1, 13, 14, 16, 19, 21, 23, 24, 25)


class Dropout(OpDef):
    """Inference-mode Dropout is the identity; its mask output, when used, is all true."""

    op, versions, lowered_to = "Dropout", (7, 10, 12, 13, 22), "Identity"
    num_inputs = (1, 3)
    num_outputs = (1, 2)
    dtypes = ALL

    def convert(self, node: Node) -> None:
        if node.version >= 12 and node.input(2) is not None:
            training = node.static(2, "training_mode")
            if bool(np.asarray(training).reshape(-1)[0]):
                raise node.fail("training_mode=true is not supported; reprobuild builds inference engines")
        x = node.input(0)
        assert x is not None
        if node.output_used(1):
            check_constant_size(node, x.shape, "bool", "its mask output")
            node.define_constant(np.ones(x.shape, dtype=bool), output=1)
        node.emit({}, inputs=[0], n_outputs=1, op="Identity")

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        return [inputs[0]]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        return [inputs[0].copy()]


class Constant(BuildTimeOp):
    op, versions = "Constant", (1, 9, 11, 12, 13, 19, 21, 23, 24, 25)
    # ONNX requires value before version 11 (then its only attribute) and not after, which one Attr cannot say;
    # convert asks for exactly one value attribute in every version.
    attribute_overrides = {"value": Attr("tensor")}
    num_inputs = (0, 0)
    dtypes = ALL

    def convert(self, node: Node) -> None:
        given = [k for k in sorted(self.attributes) if node.has_attr(k)]
        if len(given) != 1:
            raise node.fail(f"needs exactly one value attribute; got {given or 'none'}")
        key = given[0]
        if key in ("value_string", "value_strings"):
            raise node.fail("string constants are not supported")
        if key == "sparse_value":
            raise node.fail("sparse constants are not supported")
        value = node.attr(key)
        if key in ("value_float", "value_floats"):
            value = np.asarray(value, dtype=np.float32)
        elif key in ("value_int", "value_ints"):
            value = np.asarray(value, dtype=np.int64)
        value = np.asarray(value)
        check_constant_value(node, value, f"its value ({key})")
        node.define_constant(value)


class ConstantOfShape(BuildTimeOp):
    op, versions = "ConstantOfShape", (9, 20, 21, 23, 24, 25)
    dtypes = ("int64",)

    def convert(self, node: Node) -> None:
        dims = ints(node.static(0, "the output shape"))
        value = node.attr("value")
        fill = np.zeros(1, dtype=np.float32) if value is ABSENT else np.asarray(value).reshape(-1)
        if fill.size != 1:
            raise node.fail(f"value must hold one element; it holds {fill.size}")
        if any(d < 0 for d in dims):
            raise node.fail(f"negative dimension in shape {list(dims)}")
        check_constant_size(node, dims, fill.dtype)
        node.define_constant(np.full(dims, fill[0], dtype=fill.dtype))


class Shape(BuildTimeOp):
    op, versions = "Shape", (1, 13, 15, 19, 21, 23, 24, 25)
    dtypes = ALL

    def convert(self, node: Node) -> None:
        x = node.input(0)
        assert x is not None
        rank = x.rank
        start = int(node.attr("start")) if node.version >= 15 else 0
        end = int(node.attr("end")) if node.version >= 15 and node.has_attr("end") else rank
        start, end = (min(max(v + rank if v < 0 else v, 0), rank) for v in (start, end))
        node.define_constant(symbolic.int_array(x.shape[start:end]))


class Size(BuildTimeOp):
    op, versions = "Size", (1, 13, 19, 21, 23, 24, 25)
    dtypes = ALL

    def convert(self, node: Node) -> None:
        x = node.input(0)
        assert x is not None
        node.define_constant(symbolic.int_array([symbolic.prod(x.shape)]).reshape(()))


class Reshape(OpDef, layer.Reshape):
    versions = (5, 13, 14, 19, 21, 23, 24, 25)

    def convert(self, node: Node) -> None:
        x = node.input(0)
        assert x is not None
        dims = list(symbolic.sizes(node.static(1, "the target shape")))
        allowzero = node.version >= 14 and int(node.attr("allowzero"))
        if allowzero and 0 in dims and -1 in dims:
            raise node.fail(f"target shape {dims} has both 0 and -1 with allowzero=1")
        if any(d == 0 and not allowzero and i >= x.rank for i, d in enumerate(dims)):
            raise node.fail(f"target shape {dims} copies (0) a dimension the input {list(x.shape)} does not have")
        resolved = [x.shape[i] if d == 0 and not allowzero else d for i, d in enumerate(dims)]
        if resolved.count(-1) > 1 or any(d < -1 for d in resolved):
            raise node.fail(f"target shape {dims} is invalid (more than one -1, or a negative dimension)")
        if -1 in resolved:
            known, size = symbolic.prod([d for d in resolved if d != -1]), symbolic.prod(x.shape)
            if known == 0 or size % known:
                raise node.fail(f"cannot reshape {list(x.shape)} to {dims}")
            resolved[resolved.index(-1)] = size // known
        node.emit({"shape": tuple(resolved)}, inputs=[0])


class Flatten(OpDef, layer.Flatten):
    versions = (1, 9, 11, 13, 21, 23, 24, 25)

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        x = node.input(0)
        assert x is not None
        axis = int(attrs["axis"])
        if not -x.rank <= axis <= x.rank:
            raise OpError(f"axis {axis} is out of range for rank {x.rank}")
        return {"axis": axis + x.rank if axis < 0 else axis}


class Concat(OpDef, layer.Concat):
    versions = (4, 11, 13)
    checks_required = ("axis",)  # canonical_attrs says so with a message of its own

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        if "axis" not in attrs:
            raise OpError("the axis attribute is required")
        x = node.input(0)
        assert x is not None
        return {"axis": axis_in_range(int(attrs["axis"]), x.rank)}


OPS = (Concat(), Constant(), ConstantOfShape(), Dropout(), Flatten(), Identity(), Reshape(), Shape(), Size())

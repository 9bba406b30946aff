"""One ONNX node under conversion: the :class:`reprobuild.ops.Node` an op definition's ``convert`` sees.

It decodes the node's attributes (checking each against the definition, for the node's op version), gives
the types and build-time values of its inputs, and turns ``emit`` into an IR layer, folded into constants
right away when every input is a constant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import onnx
from onnx import numpy_helper

from reprobuild.core.dtypes import dtype_name, itemsize
from reprobuild.core.errors import ModelError, ResourceError, UnsupportedOpError
from reprobuild.ir import NetworkDefinition, TensorInfo
from reprobuild.ops import ABSENT, OpDef, StaticInputError, TensorType, infer_types
from reprobuild.ops._constant_limits import check_constant_value, shape_problem
from reprobuild.ops.base import REQUIRED

_KIND = {
    onnx.AttributeProto.INT: "int", onnx.AttributeProto.FLOAT: "float", onnx.AttributeProto.STRING: "string",
    onnx.AttributeProto.INTS: "ints", onnx.AttributeProto.FLOATS: "floats", onnx.AttributeProto.STRINGS: "strings",
    onnx.AttributeProto.TENSOR: "tensor", onnx.AttributeProto.SPARSE_TENSOR: "sparse_tensor",
    onnx.AttributeProto.GRAPH: "graph", onnx.AttributeProto.GRAPHS: "graphs",
    onnx.AttributeProto.TYPE_PROTO: "type_proto", onnx.AttributeProto.TYPE_PROTOS: "type_protos",
    onnx.AttributeProto.TENSORS: "tensors", onnx.AttributeProto.SPARSE_TENSORS: "sparse_tensors",
}
#: Attribute kinds an op definition may declare, and the ONNX kinds that satisfy each.
_COMPATIBLE = {"float": {"float", "int"}, "floats": {"floats", "ints"}}


def _decode(node_name: str, op_type: str, attr: onnx.AttributeProto) -> tuple[str, Any]:
    kind = _KIND.get(attr.type, f"type {attr.type}")
    where = f"node {node_name!r} (op {op_type}): attribute {attr.name!r}"
    if kind in ("graph", "graphs", "type_proto", "type_protos", "tensors", "sparse_tensors"):
        raise UnsupportedOpError(f"{where} is a {kind}; subgraphs and type attributes are not supported")
    if kind == "sparse_tensor":
        return kind, attr.sparse_tensor
    try:
        value = onnx.helper.get_attribute_value(attr)
        if kind == "tensor":
            value = numpy_helper.to_array(value)
        elif kind == "string":
            value = value.decode("utf-8")
        elif kind == "strings":
            value = tuple(v.decode("utf-8") for v in value)
        elif kind in ("ints", "floats"):
            value = tuple(value)
    except UnicodeDecodeError:
        raise ModelError(f"{where} is not valid UTF-8") from None
    except Exception as exc:
        raise ModelError(f"{where} cannot be read: {exc}") from None
    return kind, value


class OnnxParser(Protocol):
    """What a node reads of and adds to the parse it belongs to (``onnx_parser.OnnxParser``, which imports this
    module to convert each node)."""

    network: NetworkDefinition
    used_names: set[str]

    def network_inputs_behind(self, tensor: str) -> list[str]: ...

    def define_constant(self, name: str, value: np.ndarray, node_name: str) -> None: ...

    def add_layer(self, name: str, op: str, inputs: Sequence[str], outputs: Sequence[str],
                  attrs: Mapping[str, Any]) -> None: ...


class OnnxNode:
    """Implements :class:`reprobuild.ops.Node` for one ONNX node."""

    def __init__(self, parser: OnnxParser, proto: onnx.NodeProto, name: str, opdef: OpDef, opset: int,
                 version: int) -> None:
        self.parser, self.proto, self.name, self.opdef = parser, proto, name, opdef
        self.op_type, self.opset, self.version = proto.op_type, opset, version
        self.net = parser.network
        self._attrs: dict[str, Any] = {}
        for a in proto.attribute:
            spec = opdef.attributes.get(a.name)
            if spec is None or not spec.exists_in(version):
                known = sorted(k for k, s in opdef.attributes.items() if s.exists_in(version))
                raise self.fail(f"attribute {a.name!r} is not one {self.op_type} version {version} has; it has: "
                                f"{', '.join(known) or 'none'}")
            kind, value = _decode(name, self.op_type, a)
            if kind != spec.kind and kind not in _COMPATIBLE.get(spec.kind, ()):
                raise self.fail(f"attribute {a.name!r} is a {kind}; {self.op_type} expects a {spec.kind}")
            self._attrs[a.name] = value
        names = list(proto.input)
        while names and not names[-1]:
            names.pop()
        self._inputs = names
        for t in names:
            if t and not self.net.has_tensor(t):
                raise self.fail(f"input {t!r} is not defined before this node (the graph is not topologically "
                                "sorted, or the tensor comes from an unsupported subgraph)")
        low, high = opdef.num_inputs
        if len(names) < low or (high is not None and len(names) > high):
            takes = str(low) if low == high else f"{low} to {high if high is not None else 'any number of'}"
            raise self.fail(f"has {len(names)} inputs; {self.op_type} takes {takes}")
        required = len(names) if high is None else low  # a variadic op's inputs are all required
        omitted = [i for i in range(required) if not names[i]]
        if omitted:
            raise self.fail(f"input(s) {omitted} are omitted (an empty name), but {self.op_type} requires "
                            f"{'every input it lists' if high is None else f'its first {low}'}; give their tensors")

    # --- the Node protocol -------------------------------------------------------------------------------------

    def attr(self, key: str) -> Any:
        if key in self._attrs:
            return self._attrs[key]
        spec = self.opdef.attributes.get(key)
        if spec is None or not spec.exists_in(self.version):
            return ABSENT
        if spec.default is REQUIRED:
            raise self.fail(f"the attribute {key!r} is required")
        return spec.default

    def has_attr(self, key: str) -> bool:
        return key in self._attrs

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    def input_name(self, i: int) -> str | None:
        return self._inputs[i] if i < len(self._inputs) and self._inputs[i] else None

    def input(self, i: int) -> TensorType | None:
        name = self.input_name(i)
        if name is None:
            return None
        info = self.net.tensor(name)
        return TensorType(info.shape, info.dtype)

    def const(self, i: int) -> np.ndarray | None:
        name = self.input_name(i)
        return None if name is None else self.net.constant(name)

    def static(self, i: int, what: str) -> np.ndarray:
        name = self.input_name(i)
        if name is None:
            raise self.fail(f"input {i} ({what}) is required")
        value = self.net.constant(name)
        if value is not None:
            return value
        sources = self.parser.network_inputs_behind(name)
        pins = " ".join(f"--input-value {s}=..." for s in sources)
        raise StaticInputError(
            f"node {self.name!r} (op {self.op_type}): input {i} ({what}) must be known when the engine is built, "
            f"but it is computed at run time" + (
                f" from network input(s) {', '.join(repr(s) for s in sources)}. Engines have fixed shapes: pin "
                f"those inputs' values at build time ({pins}; TensorRT's shape-input values), and the runtime "
                "will check that it is given those values" if sources else ""), sources)

    @property
    def num_outputs(self) -> int:
        return len(self.proto.output)

    def output_used(self, i: int) -> bool:
        return i < len(self.proto.output) and bool(self.proto.output[i]) and \
            self.proto.output[i] in self.parser.used_names

    def fail(self, message: str) -> UnsupportedOpError:
        return UnsupportedOpError(f"node {self.name!r} (op {self.op_type}): {message}")

    def define_constant(self, value: np.ndarray, output: int = 0) -> None:
        name = self.proto.output[output] if output < len(self.proto.output) else ""
        if name:
            value = np.asarray(value)
            try:
                if value.dtype != object:  # an object array holds symbolic sizes (core/symbolic.py)
                    dtype_name(value.dtype)
            except ModelError:
                raise self.fail(f"output {output} ({name!r}) would be a constant of dtype {value.dtype}, which "
                                "reprobuild does not support") from None
            # The op checked its size before computing it; this catches any op that did not.
            check_constant_value(self, value, f"output {output} ({name!r})")
            self.parser.define_constant(name, value, self.name)

    def emit(self, attrs: Mapping[str, Any], inputs: Sequence[int] | None = None, n_outputs: int | None = None,
             op: str | None = None, outputs: Sequence[int] | None = None) -> None:
        if inputs is None:
            present = [i for i in range(len(self._inputs)) if self._inputs[i]]
            if present != list(range(len(present))):
                missing = [i for i in range(len(self._inputs)) if not self._inputs[i]]
                raise self.fail(f"optional input(s) {missing} are omitted before later ones; this op does not "
                                "support that form")
            inputs = present
        names = []
        for i in inputs:
            name = self.input_name(i)
            if name is None:
                raise self.fail(f"input {i} is required")
            names.append(name)
        if outputs is not None:
            if any(not 0 <= i < len(self.proto.output) or not self.proto.output[i] for i in outputs):
                raise self.fail(f"output positions {list(outputs)} name an output the node does not have")
            outs = [self.proto.output[i] for i in outputs]
        else:
            count = n_outputs if n_outputs is not None else len(self.proto.output)
            outs = list(self.proto.output[:count])
            if any(not o for o in outs):
                raise self.fail("an unnamed (omitted) output comes before a used one; this form is not supported")
        self.parser.add_layer(self.name, op or self.opdef.layer_op, names, outs, attrs)


def infer_infos(op: str, attrs: Mapping[str, Any], inputs: Sequence[TensorInfo], outputs: Sequence[str],
                where: str) -> list[TensorInfo]:
    types = infer_types(op, attrs, [TensorType(t.shape, t.dtype) for t in inputs], where)
    if len(types) < len(outputs):
        raise UnsupportedOpError(f"{where}: uses {len(outputs)} outputs, but reprobuild computes {len(types)}")
    for o, t in zip(outputs, types):
        problem = shape_problem(t.shape, itemsize(t.dtype))
        if problem is not None:
            shape = list(t.shape) if len(t.shape) <= 40 else [*t.shape[:40], "..."]
            raise ResourceError(f"{where}: its output {o!r} would have shape {shape} ({t.dtype}): {problem}; check the "
                                "shapes and sizes the node is given")
    return [TensorInfo(o, t.shape, t.dtype) for o, t in zip(outputs, types)]


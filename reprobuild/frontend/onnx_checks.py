"""Checks of a decoded ONNX model that come before anything is converted or allocated.

- every string field is valid UTF-8 (protobuf's Python runtime hands back ``bytes`` for one that is not);
- the default-domain opset is one the installed onnx knows;
- the graph has nodes and outputs;
- every declared shape (inputs, outputs, value_info, initializers, Constant values) can be represented: at most
  :data:`~reprobuild.ops._constant_limits.MAX_RANK` dimensions, element count and byte size within int64. A
  large but representable shape is not refused here: whether a build fits in memory is the builder's cap
  (``BuilderConfig.max_memory``), and nothing in the frontend allocates per declared shape.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import onnx
import onnx.defs

from reprobuild.core.dtypes import np_dtype
from reprobuild.core.errors import ModelError, ResourceError
from reprobuild.core.textformat import first_lines
from reprobuild.frontend.onnx_support import default_opset
from reprobuild.ops._constant_limits import shape_problem
from reprobuild.ops.onnx_types import ELEM_TYPES

#: The most string fields that are not UTF-8 one error lists.
_SHOWN = 20
#: protobuf's FieldDescriptor class (its TYPE_* and LABEL_* constants), without importing protobuf's untyped modules.
FieldDescriptor: Any = type(onnx.NodeProto.DESCRIPTOR.fields_by_name["name"])


# --- strings ---------------------------------------------------------------------------------------------------

def _repeated(fd: Any) -> bool:
    flag = getattr(fd, "is_repeated", None)
    return bool(flag) if flag is not None else fd.label == FieldDescriptor.LABEL_REPEATED


def _bad_strings(msg: Any, path: tuple[tuple[str, int | None], ...]) -> Iterator[tuple[tuple[Any, ...], bytes]]:
    for fd, value in msg.ListFields():
        if fd.type == FieldDescriptor.TYPE_STRING:
            if _repeated(fd):
                for i, v in enumerate(value):
                    if isinstance(v, bytes):
                        yield (*path, (fd.name, i)), v
            elif isinstance(value, bytes):
                yield (*path, (fd.name, None)), value
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            if _repeated(fd):
                for i, m in enumerate(value):
                    yield from _bad_strings(m, (*path, (fd.name, i)))
            else:
                yield from _bad_strings(value, (*path, (fd.name, None)))


def _op_of(model: onnx.ModelProto, index: int) -> str:
    op = model.graph.node[index].op_type
    return op if isinstance(op, str) else repr(op)


def _describe(model: onnx.ModelProto, path: tuple[tuple[str, int | None], ...], value: bytes) -> str:
    dotted = ".".join(f"{name}[{i}]" if i is not None else name for name, i in path)
    where = ""
    if len(path) >= 2 and path[0] == ("graph", None) and path[1][0] == "node" and path[1][1] is not None:
        where = f" (node {path[1][1]}, op {_op_of(model, path[1][1])})"
    shown = value if len(value) <= 60 else value[:60] + b"..."
    return f"{dotted}{where} = {shown!r}"


def check_strings(model: onnx.ModelProto) -> None:
    """A ModelError listing every string field (node names, tensor names, the graph's name, ...) that is not
    valid UTF-8, each with where it is (the node's index and op for a node's fields)."""
    bad = list(_bad_strings(model, ()))
    if not bad:
        return
    lines = first_lines(bad, _SHOWN, lambda b: f"  - {_describe(model, *b)}")
    raise ModelError(
        f"the model has {len(bad)} string field(s) that are not valid UTF-8 (ONNX names and strings must be UTF-8):"
        f"\n{lines}\nthe file is corrupted or was written by a broken exporter: export it again, or rename "
        "those with onnx (load the model, set each field to a UTF-8 string, save it)")


# --- opset and graph -------------------------------------------------------------------------------------------

def check_opset(model: onnx.ModelProto) -> None:
    """A ModelError for a default-domain opset newer than the installed onnx knows: reprobuild resolves every
    node's op version with onnx's schemas, which stop there."""
    opset = default_opset(model)
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise ModelError(
            f"the model imports the default ONNX domain at opset {opset}, but the newest opset reprobuild knows is "
            f"{newest} (that of the installed onnx {onnx.__version__}); its ops cannot be resolved. Export the "
            f"model again with an older opset (torch.onnx.export(..., opset_version={newest}) or lower), or check "
            "that opset_import is not corrupted")
    if opset < 0:
        raise ModelError(f"the model imports the default ONNX domain at opset {opset}; opsets are positive")


def check_graph(graph: onnx.GraphProto) -> None:
    """A ModelError for a graph with no outputs or no nodes: an engine would compute nothing."""
    if not graph.output:
        raise ModelError(
            f"the model's graph {graph.name!r} declares no outputs (graph.output is empty), so an engine would "
            "compute nothing; export the model with its outputs (torch.onnx.export(..., output_names=[...])) or "
            "list the tensors it should return in graph.output")
    if not graph.node:
        outputs = ", ".join(repr(o.name) for o in graph.output[:5])
        raise ModelError(
            f"the model's graph {graph.name!r} has no nodes: its output(s) {outputs} are inputs or initializers, "
            "so an engine would compute nothing; check that this is the right file, and export the model with "
            "its computation")


# --- shapes ----------------------------------------------------------------------------------------------------

def _itemsize(elem_type: int) -> int:
    name = ELEM_TYPES.get(elem_type)
    return int(np_dtype(name).itemsize) if name is not None else 1


def check_shape(dims: Sequence[int], elem_type: int, what: str) -> None:
    """A ResourceError when a tensor of this declared shape cannot be represented (see ``shape_problem``)."""
    problem = shape_problem(dims, _itemsize(elem_type))
    if problem is not None:
        shown = list(dims) if len(dims) <= 40 else [*dims[:40], "..."]
        raise ResourceError(f"{what} is declared with shape {shown}: {problem}; the model is corrupted or declares a "
                            f"shape no tensor can have: check how it was exported")


def _value_info_shape(vi: onnx.ValueInfoProto) -> tuple[list[int], int] | None:
    if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
        return None
    ttype = vi.type.tensor_type
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in ttype.shape.dim], \
        ttype.elem_type


def check_declared_shapes(graph: onnx.GraphProto, names: Sequence[str]) -> None:
    """Every shape the graph declares can be represented; ``names`` are the nodes' layer names."""
    for kind, infos in (("network input", graph.input), ("network output", graph.output),
                        ("value_info entry", graph.value_info)):
        for vi in infos:
            found = _value_info_shape(vi)
            if found is not None:
                check_shape(found[0], found[1], f"{kind} {vi.name!r}")
    for init in graph.initializer:
        if any(d < 0 for d in init.dims):
            raise ModelError(f"initializer {init.name!r} has shape {list(init.dims)}, with a negative dimension; the "
                             "file is corrupted: export the model again")
        check_shape(init.dims, init.data_type, f"initializer {init.name!r}")
    for node, name in zip(graph.node, names):
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                check_shape(attr.t.dims, attr.t.data_type,
                            f"node {name!r} (op {node.op_type}): the tensor of attribute {attr.name!r}")

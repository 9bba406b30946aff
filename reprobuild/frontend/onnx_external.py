"""External data is refused everywhere in a model, before anything reads a tensor.

ONNX lets any tensor keep its bytes in another file (``data_location: EXTERNAL`` with a ``location`` entry), and
onnx's ``numpy_helper.to_array`` resolves that location against its ``base_dir`` argument, the current directory
when it is not given: a model parsed from bytes has no directory of its own. A model from an untrusted source
could then copy any readable file of the build machine (``location: ../../home/you/.ssh/id_ed25519``, an
absolute path, a symlink) into its engine. reprobuild therefore reads no external data at all, not even a
location confined to the model's directory: the manifest's model digest covers the ``.onnx`` file's bytes only,
so weights kept beside it would change the engine without changing the recorded model, and a model file below
protobuf's 2 GiB limit can always hold its tensors itself. Every place a tensor can hide is visited: the
initializers and sparse initializers of every graph, every node attribute (``t``, ``tensors``, ``sparse_tensor``,
``sparse_tensors``) and the subgraphs of If/Loop/Scan (``g``, ``graphs``), at any depth, in the main graph, the
model's local functions (their nodes and attribute defaults) and its training-info graphs.
"""

from __future__ import annotations

from collections.abc import Iterator

import onnx

from reprobuild.core.errors import ModelError
from reprobuild.core.textformat import first_lines

#: The most tensors one error names.
_SHOWN = 5
#: The most characters of a location the error quotes.
_LOCATION_CHARS = 120


def _is_external(tensor: onnx.TensorProto) -> bool:
    return tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data) > 0


def _sparse_parts(sparse: onnx.SparseTensorProto, where: str) -> Iterator[tuple[str, onnx.TensorProto]]:
    yield f"{where} (its values)", sparse.values
    yield f"{where} (its indices)", sparse.indices


def _attribute_tensors(attr: onnx.AttributeProto, where: str) -> Iterator[tuple[str, onnx.TensorProto]]:
    where = f"{where}, attribute {attr.name!r}"
    if attr.HasField("t"):
        yield where, attr.t
    for i, tensor in enumerate(attr.tensors):
        yield f"{where}[{i}]", tensor
    if attr.HasField("sparse_tensor"):
        yield from _sparse_parts(attr.sparse_tensor, where)
    for i, sparse in enumerate(attr.sparse_tensors):
        yield from _sparse_parts(sparse, f"{where}[{i}]")


def _subgraphs(attr: onnx.AttributeProto, where: str) -> Iterator[tuple[str, onnx.GraphProto]]:
    if attr.HasField("g"):
        yield f"{where}, subgraph {attr.name!r}", attr.g
    for i, graph in enumerate(attr.graphs):
        yield f"{where}, subgraph {attr.name!r}[{i}]", graph


def _node_where(scope: str, index: int, node: onnx.NodeProto) -> str:
    return f"{scope}node {node.name or index!r} (op {node.op_type})"


def _all_tensors(model: onnx.ModelProto) -> Iterator[tuple[str, onnx.TensorProto]]:
    """Every tensor of the model with where it is, graphs visited with a stack (no recursion limit to reach)."""
    graphs: list[tuple[str, onnx.GraphProto]] = [("", model.graph)]
    graphs += [(f"training info {i} initialization: ", t.initialization) for i, t in enumerate(model.training_info)]
    graphs += [(f"training info {i} algorithm: ", t.algorithm) for i, t in enumerate(model.training_info)]
    for function in model.functions:
        scope = f"function {function.name!r}: "
        for attr in function.attribute_proto:
            yield from _attribute_tensors(attr, f"{scope}default")
            graphs += [(f"{where}: ", g) for where, g in _subgraphs(attr, f"{scope}default")]
        for i, node in enumerate(function.node):
            where = _node_where(scope, i, node)
            for attr in node.attribute:
                yield from _attribute_tensors(attr, where)
                graphs += [(f"{sub}: ", g) for sub, g in _subgraphs(attr, where)]
    while graphs:
        scope, graph = graphs.pop()
        for tensor in graph.initializer:
            yield f"{scope}initializer {tensor.name!r}", tensor
        for sparse in graph.sparse_initializer:
            yield from _sparse_parts(sparse, f"{scope}sparse initializer {sparse.values.name!r}")
        for i, node in enumerate(graph.node):
            where = _node_where(scope, i, node)
            for attr in node.attribute:
                yield from _attribute_tensors(attr, where)
                graphs += [(f"{sub}: ", g) for sub, g in _subgraphs(attr, where)]


def _location(tensor: onnx.TensorProto) -> str:
    found = [entry.value for entry in tensor.external_data if entry.key == "location"]
    if not found:
        return "no location given"
    text = found[0] if len(found[0]) <= _LOCATION_CHARS else found[0][:_LOCATION_CHARS] + "..."
    return f"location {text!r}"


def check_no_external_data(model: onnx.ModelProto) -> None:
    """A ModelError naming the tensors that keep their data in external files, before any is read."""
    external = [(where, tensor) for where, tensor in _all_tensors(model) if _is_external(tensor)]
    if not external:
        return
    lines = first_lines(external, _SHOWN, lambda e: f"  - {e[0]}: {_location(e[1])}")
    raise ModelError(
        f"the model keeps {len(external)} tensor(s) in external data files, which reprobuild does not read (a "
        f"model file must be self-contained: the manifest's model digest covers the .onnx file alone, and a "
        f"location could name any file of this machine):\n{lines}\nsave the model with its tensors inside: "
        "onnx.save(onnx.load(path), path, save_as_external_data=False), possible below the 2 GiB protobuf limit")

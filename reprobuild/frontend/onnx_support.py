"""Which nodes of a model reprobuild can convert: checked for the whole graph before anything is converted, so
that one error lists every unsupported node, each with the reason."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import onnx
import onnx.defs

from reprobuild.core.errors import ModelError, UnsupportedOpError
from reprobuild.core.textformat import first_lines
from reprobuild.ops import all_ops, find_op

#: What reprobuild says of a domain other than the default one.
DOMAINS = {
    "ai.onnx.ml": "ONNX-ML (classical machine learning: trees, encoders, SVMs)",
    "ai.onnx.preview.training": "ONNX training ops",
    "ai.onnx.preview": "ONNX preview ops",
    "com.microsoft": "onnxruntime's contrib ops (export without onnxruntime-specific optimizations)",
}
#: Default-domain ops that are out of scope, and why.
OUT_OF_SCOPE = {
    **dict.fromkeys(("If", "Loop", "Scan"), "control flow with subgraphs is not supported"),
    **dict.fromkeys(("SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert",
                     "SequenceLength", "SequenceMap", "SplitToSequence", "ConcatFromSequence"),
                    "sequences are not supported; only tensors"),
    **dict.fromkeys(("Optional", "OptionalGetElement", "OptionalHasElement"),
                    "optional values are not supported; only tensors"),
    **dict.fromkeys(("StringConcat", "StringNormalizer", "StringSplit", "RegexFullMatch", "TfIdfVectorizer",
                     "ImageDecoder"), "strings and encoded images are not supported"),
    **dict.fromkeys(("NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss", "Gradient", "Adagrad", "Adam",
                     "Momentum"), "training-only op; reprobuild builds inference engines"),
    **dict.fromkeys(("RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Bernoulli",
                     "Multinomial"), "random sampling has no reproducible meaning in a deterministic engine"),
}


def default_opset(model: onnx.ModelProto) -> int:
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def onnx_domain(node: onnx.NodeProto) -> str:
    """The node's domain, "" for the default one (however the model spells it)."""
    return "" if node.domain == "ai.onnx" else node.domain


def _problem(node: onnx.NodeProto, opsets: Mapping[str, int]) -> tuple[str | None, tuple[int, int]]:
    domain = onnx_domain(node)
    op = node.op_type
    if domain:
        return _plugin_problem(node, domain, opsets.get(domain, 0))
    opset = opsets.get("", 0)
    if op in OUT_OF_SCOPE:
        return OUT_OF_SCOPE[op], (opset, 0)
    try:
        version = int(onnx.defs.get_schema(op, opset, "").since_version)
    except Exception:
        return f"op {op} does not exist in ONNX opset {opset}", (opset, 0)
    opdef = find_op(op)
    if opdef is None or opdef.internal:
        return f"op {op} is not implemented", (opset, version)
    if version not in opdef.versions:
        return (f"op {op} version {version} (the version in opset {opset}) is not implemented; implemented: "
                f"{', '.join(str(v) for v in opdef.versions)}"), (opset, version)
    return None, (opset, version)


def _plugin_problem(node: onnx.NodeProto, domain: str, opset: int) -> tuple[str | None, tuple[int, int]]:
    """A node of another domain than the default one: converted by a registered plugin's op, or refused."""
    opdef = find_op(node.op_type, domain)
    if opdef is None:
        what = DOMAINS.get(domain, f"the custom domain {domain!r}")
        return (f"op {node.op_type} of domain {domain!r} ({what}) is not supported; reprobuild implements the "
                "default ONNX domain, and no registered plugin defines this op (a plugin's op is converted once "
                "it is registered: reprobuild.registry.plugins.register_plugin)"), (0, 0)
    version = max((v for v in opdef.versions if v <= opset), default=0)
    if version == 0:
        imported = f"imports domain {domain!r} at opset {opset}" if opset else f"does not import domain {domain!r}"
        return (f"op {opdef.layer_op}: the model {imported}, and the registered plugin implements the op's versions "
                f"{', '.join(map(str, opdef.versions))}; import the domain at one of those opsets"), (opset, 0)
    return None, (opset, version)


class UnsupportedNodesError(UnsupportedOpError):
    """Some nodes of the model cannot be converted; ``nodes`` lists (node name, op, reason) for each."""

    def __init__(self, message: str, nodes: Sequence[tuple[str, str, str]]) -> None:
        super().__init__(message)
        self.nodes = tuple(nodes)


class InvalidNodesError(ModelError):
    """Several nodes of the model are invalid or cannot be converted, for reasons other than an unsupported op
    (a dynamic shape, an attribute value, ...); ``nodes`` lists (node name, op, reason) for each."""

    def __init__(self, message: str, nodes: Sequence[tuple[str, str, str]]) -> None:
        super().__init__(message)
        self.nodes = tuple(nodes)


#: The most nodes one error lists (the count of the others follows).
SHOWN = 40


def describe_nodes(bad: Sequence[tuple[str, str, str]], note: str = "", list_ops: bool = True) -> str:
    """The message that lists every node in ``bad`` (name, op, reason): a summary by op, one line a node, then
    ``note`` and (``list_ops``) the ops reprobuild implements."""
    ops = Counter(op for _, op, _ in bad)
    summary = ", ".join(f"{op} x{n}" if n > 1 else op for op, n in sorted(ops.items()))
    lines = first_lines(bad, SHOWN, lambda b: f"  - node {b[0]!r} (op {b[1]}): {b[2]}")
    text = f"the model has {len(bad)} node(s) reprobuild cannot convert (ops: {summary}):\n{lines}"
    if note:
        text += f"\n{note}"
    if list_ops:
        known = ", ".join(o.op for o in all_ops() if not o.domain and not o.internal)
        text += f"\nreprobuild implements these default-domain ops: {known}"
    return text


def support_problems(graph: onnx.GraphProto, names: Sequence[str], opsets: Mapping[str, int],
                     versions: bool = True) -> tuple[list[tuple[int, int]], list[tuple[int, str, str, str]]]:
    """(opset, op version) of every node, and (index, name, op, reason) of each node that cannot be converted.
    ``versions=False`` leaves out problems with the op's version (for a model about to be upgraded)."""
    plan, bad = [], []
    for i, (node, name) in enumerate(zip(graph.node, names)):
        problem, resolved = _problem(node, opsets)
        plan.append(resolved)
        if problem is not None and (versions or resolved[1] == 0 or find_op(node.op_type, onnx_domain(node)) is None):
            bad.append((i, name, node.op_type, problem))
    return plan, bad


def unsupported_error(bad: Sequence[tuple[int, str, str, str]], note: str = "") -> UnsupportedNodesError:
    nodes = [(name, op, why) for _, name, op, why in bad]
    return UnsupportedNodesError(describe_nodes(nodes, note), nodes)


def check_support(graph: onnx.GraphProto, names: Sequence[str],
                  opsets: Mapping[str, int]) -> list[tuple[int, int]]:
    """(opset, op version) of every node; an UnsupportedNodesError listing every node that cannot be converted."""
    plan, bad = support_problems(graph, names, opsets)
    if bad:
        raise unsupported_error(bad)
    return plan

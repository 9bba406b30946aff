"""The ONNX frontend: load and check a model, upgrade old opsets, resolve input shapes and pinned input values,
convert every node through its op definition, and fold constants as it goes.

Loading never executes code from the file (protobuf only), refuses external data (in any
tensor: :mod:`reprobuild.frontend.onnx_external`) and oversized files, and turns
every problem into a typed error: a :class:`~reprobuild.core.errors.ModelError` that names the node and the op, or a
:class:`~reprobuild.core.errors.ResourceError` for a tensor that cannot be represented (more than 32 dimensions, an
element count or byte size beyond int64) or a constant made at build time over
:data:`~reprobuild.ops._constant_limits.MAX_BUILD_CONSTANT_BYTES`. Before converting anything, the model's
strings, opset, graph and declared shapes are checked (:mod:`reprobuild.frontend.onnx_checks`), and every node
is checked for support. A node that fails does not stop the others: one error lists every unsupported or
invalid node (when the ONNX checker rejects the model, every node is checked on its own too). Nothing here
allocates what a declared shape asks for; whether a large network fits in memory is the builder's cap.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnx.inliner as onnx_inliner
import onnx.version_converter
from onnx import numpy_helper

from reprobuild.core.digest import sha256_hex
from reprobuild.core.dtypes import itemsize, np_dtype
from reprobuild.core.errors import DynamicShapeError, ModelError, ResourceError, UnsupportedOpError, UsageError
from reprobuild.core.fileio import read_bounded
from reprobuild.core.logger import Logger, Severity
from reprobuild.core.symbolic import SYMBOL, is_symbolic, symbol, symbol_ranges
from reprobuild.frontend.onnx_checks import check_declared_shapes, check_graph, check_opset, check_strings
from reprobuild.frontend.onnx_external import check_no_external_data
from reprobuild.frontend.onnx_node import OnnxNode, infer_infos
from reprobuild.frontend.onnx_support import (
    InvalidNodesError,
    UnsupportedNodesError,
    default_opset,
    describe_nodes,
    onnx_domain,
    support_problems,
    unsupported_error,
)
from reprobuild.ir import Network, NetworkDefinition, OptimizationProfile, TensorInfo, profile_ranges
from reprobuild.ops import OpError, StaticInputError, TensorType, get_op
from reprobuild.ops._constant_limits import shape_problem
from reprobuild.ops.onnx_types import dtype_of_elem_type
from reprobuild.ops.registry import check_constant_inputs, evaluate, located

#: protobuf cannot hold more than 2 GiB; larger models need external data, which is not supported.
MAX_MODEL_BYTES = 2 * 1024**3
#: Constants folded at build time larger than this stay layers, computed at run time, so that a small model
#: cannot make a huge engine file.
MAX_FOLDED_BYTES = 1 << 30
#: Models older than this default-domain opset are upgraded to it with onnx.version_converter.
MIN_OPSET = 7
#: Attribute kinds that hold subgraphs: the checker's node check needs their outer scope, so they are left out
#: of it (the ops that have them are refused anyway).
_SUBGRAPH_ATTRS = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)


@dataclass(frozen=True)
class ModelInfo:
    """What identifies the model file a network came from; recorded in the manifest."""

    sha256: str
    size_bytes: int
    ir_version: int
    opset: int
    producer: str
    graph_name: str
    #: The model's own default-domain opset when it was older than MIN_OPSET and upgraded (else None).
    upgraded_from_opset: int | None = None
    #: Each run-time input's shape as the model declares it: an int for a static dimension, the symbol ('N', or '?'
    #: when unnamed) for a dynamic one. Not part of the manifest; the engine keeps it so that a run with another
    #: shape can say whether a rebuild with --input-shape helps (a dynamic dimension) or not (a static one).
    declared_inputs: Mapping[str, tuple[int | str, ...]] = field(default_factory=dict)
    #: The range of each dynamic dimension kept symbolic (parsed for optimization profiles); empty otherwise.
    symbol_ranges: Mapping[str, tuple[int, int]] = field(default_factory=dict)


class OnnxParser:
    """Fills a NetworkDefinition from ONNX bytes, as TensorRT's ``OnnxParser(network, logger)``."""

    def __init__(self, network: NetworkDefinition, logger: Logger | None = None) -> None:
        self.network = network
        self.logger = logger or Logger()
        self.used_names: set[str] = set()
        self.folded = 0
        self.model_info: ModelInfo | None = None
        self._declared: dict[str, tuple[int | str, ...]] = {}
        self._dynamic: dict[str, tuple[int, int]] = {}
        self._profiles: list[OptimizationProfile] = []
        self._used_symbols: set[str] = set()

    def parse_from_file(self, path: str | os.PathLike[str], input_shapes: Mapping[str, Sequence[int]] | None = None,
                        input_values: Mapping[str, np.ndarray] | None = None,
                        dynamic: Mapping[str, tuple[int, int]] | None = None,
                        profiles: Sequence[OptimizationProfile] = ()) -> ModelInfo:
        return self.parse(read_bounded(path, MAX_MODEL_BYTES, "model", ModelError), input_shapes, input_values,
                          dynamic, profiles)

    def parse(self, data: bytes, input_shapes: Mapping[str, Sequence[int]] | None = None,
              input_values: Mapping[str, np.ndarray] | None = None,
              dynamic: Mapping[str, tuple[int, int]] | None = None,
              profiles: Sequence[OptimizationProfile] = ()) -> ModelInfo:
        """``dynamic``: the range (lowest, highest) of each dynamic dimension to keep symbolic, by its symbol (the
        model's dim_param, or ``input:axis`` for an unnamed one); the network's shapes and attributes then hold
        SymInts (:mod:`reprobuild.core.symbolic`) valid over the whole range, and ``Network.specialize`` gives
        it at one size. ``profiles``: optimization profiles, whose hull gives those ranges (``dynamic`` then
        adds to them). A dynamic dimension ``input_shapes`` fixes is not symbolic."""
        if len(data) > MAX_MODEL_BYTES:
            raise ModelError(f"model is {len(data)} bytes; the limit is {MAX_MODEL_BYTES}")
        self._dynamic = _checked_ranges(dynamic or {})
        self._profiles = list(profiles)
        with ThreadPoolExecutor(max_workers=1) as pool:
            digest = pool.submit(sha256_hex, data)  # hashing releases the GIL: overlap it with parsing
            info = self._parse(data, dict(input_shapes or {}), dict(input_values or {}))
            self.model_info = dataclasses.replace(info, sha256=digest.result())
        self.network.source = dataclasses.asdict(self.model_info)
        return self.model_info

    # --- the model -----------------------------------------------------------------------------------------------

    def _load(self, data: bytes) -> tuple[onnx.ModelProto, int | None]:
        if not data:
            raise ModelError("not a readable ONNX model: the file is empty (0 bytes); give an ONNX model file")
        try:
            model = onnx.load_model_from_string(data)
        except Exception as exc:
            raise ModelError(f"not a readable ONNX model (protobuf decode failed: {exc})") from None
        if model.ir_version <= 0 or not model.HasField("graph"):
            missing = " and ".join(w for w, gone in (("no ir_version", model.ir_version <= 0),
                                                     ("no graph", not model.HasField("graph"))) if gone)
            raise ModelError(f"not a readable ONNX model: the {len(data)} bytes decode as protobuf, but with "
                             f"{missing}; this is not an ONNX model file (or it is truncated or corrupted)")
        if model.ir_version > onnx.IR_VERSION:  # the checker's C++ side takes a 32-bit int: 2**40 was a TypeError
            raise ModelError(f"the model's ir_version is {model.ir_version}, newer than the newest this installation "
                             f"reads (onnx {onnx.__version__}: IR version {onnx.IR_VERSION}); export the model with "
                             "an older ONNX, or upgrade onnx if the model is really that new")
        check_strings(model)  # before anything reads a name: an undecodable one comes back as bytes
        check_no_external_data(model)  # before the checker (it stats locations) and anything that reads a tensor
        check_opset(model)
        check_graph(model.graph)
        check_declared_shapes(model.graph, _layer_names(model.graph))
        opset = default_opset(model)
        self._check_model(data, model, upgrading=0 < opset < MIN_OPSET)
        upgraded_from = None
        if 0 < opset < MIN_OPSET:  # 0: no default-domain import; its nodes are refused by domain instead
            try:
                model = onnx.version_converter.convert_version(model, MIN_OPSET)
            except Exception as exc:
                raise ModelError(f"the model's default-domain opset {opset} is older than {MIN_OPSET}, and "
                                 f"onnx.version_converter cannot upgrade it: {exc}") from None
            upgraded_from = opset
            self.logger.info(f"upgraded the model from opset {opset} to {MIN_OPSET} with onnx.version_converter")
        if model.functions:
            try:
                model = onnx_inliner.inline_local_functions(model)
            except Exception as exc:
                raise ModelError(f"the model's local functions cannot be inlined: {exc}") from None
        return model, upgraded_from

    def _check_model(self, data: bytes, model: onnx.ModelProto, upgrading: bool) -> None:
        """The ONNX checker. It stops at the first problem; when it rejects the model, every node is checked on
        its own (reprobuild's support, then the checker's node check) so that the error lists every bad node."""
        try:
            onnx.checker.check_model(data)  # the bytes we have: checking the proto would serialize it again
            return
        except Exception as exc:
            message = f"the ONNX checker rejects the model: {exc}"
        graph = model.graph
        names = _layer_names(graph)
        opsets = {("" if o.domain == "ai.onnx" else o.domain): int(o.version) for o in model.opset_import}
        _, unsupported = support_problems(graph, names, opsets, versions=not upgrading)
        bad = [(name, op, why) for _, name, op, why in unsupported]
        refused = {i for i, *_ in unsupported}
        ctx = onnx.checker.C.CheckerContext()
        ctx.ir_version = int(model.ir_version)
        ctx.opset_imports = {o.domain: int(o.version) for o in model.opset_import}
        for i, (node, name) in enumerate(zip(graph.node, names)):
            if i in refused or any(a.type in _SUBGRAPH_ATTRS for a in node.attribute):
                continue
            try:
                onnx.checker.check_node(node, ctx)
            except Exception as exc:
                why = str(exc).strip().split("\n")[0]
                bad.append((name, node.op_type, f"the ONNX checker rejects it: {why}"))
        if not bad:
            raise ModelError(message)
        order = {name: i for i, name in enumerate(names)}
        bad.sort(key=lambda b: order.get(b[0], 0))
        nodes_error = UnsupportedNodesError if refused else InvalidNodesError
        raise nodes_error(describe_nodes(bad, list_ops=bool(refused)), bad)

    def _parse(self, data: bytes, input_shapes: dict[str, Sequence[int]],
               input_values: dict[str, np.ndarray]) -> ModelInfo:
        model, upgraded_from = self._load(data)
        graph = model.graph
        opsets = {("" if o.domain == "ai.onnx" else o.domain): int(o.version) for o in model.opset_import}
        names = _layer_names(graph)
        self.used_names = {t for n in graph.node for t in n.input if t} | {o.name for o in graph.output}
        self._graph_outputs = {o.name for o in graph.output}
        if self._profiles:
            self._dynamic = {**_checked_ranges(profile_ranges(self._profiles, _declared_dims(graph))), **self._dynamic}
        with symbol_ranges(self._dynamic):  # every size decision below holds over these ranges
            return self._parse_graph(data, model, graph, opsets, names, upgraded_from, input_shapes, input_values)

    def _parse_graph(self, data: bytes, model: onnx.ModelProto, graph: onnx.GraphProto, opsets: Mapping[str, int],
                     names: Sequence[str], upgraded_from: int | None, input_shapes: dict[str, Sequence[int]],
                     input_values: dict[str, np.ndarray]) -> ModelInfo:
        plan, unsupported = support_problems(graph, names, opsets)
        try:
            self._add_constants(graph)
            self._add_inputs(graph, input_shapes, input_values)
            unused = sorted(set(self._dynamic) - self._used_symbols)
            if unused:
                raise UsageError(f"dynamic dimension(s) {', '.join(map(repr, unused))} given a range, but no network "
                                 "input has them; the model's dynamic dimensions are: "
                                 f"{', '.join(sorted(self._used_symbols)) or 'none'}")
        except (ModelError, UsageError):
            if unsupported:  # the unsupported nodes first, as before anything else is read
                raise unsupported_error(unsupported) from None
            raise
        self._convert_nodes(graph, names, plan, unsupported)
        for out in graph.output:
            if not self.network.has_tensor(out.name):
                raise ModelError(f"network output {out.name!r} is not produced by any node")
            self._check_declared(out, self.network.tensor(out.name))
            if self.network.constant(out.name) is not None:
                self.network.materialize_constant(out.name)
            self.network.mark_output(out.name)
        self.logger.log(Severity.INFO, f"parsed ONNX model (opset {opsets.get('', 0)}): "
                                       f"{self.network.num_layers} layers, {self.folded} node(s) folded into "
                                       "constants")
        return ModelInfo(
            sha256="", size_bytes=len(data), ir_version=int(model.ir_version), opset=int(opsets.get("", 0)),
            producer=f"{model.producer_name} {model.producer_version}".strip(), graph_name=graph.name,
            upgraded_from_opset=upgraded_from, declared_inputs=dict(self._declared),
            symbol_ranges={k: self._dynamic[k] for k in sorted(self._used_symbols)},
        )

    def _convert_nodes(self, graph: onnx.GraphProto, names: Sequence[str], plan: Sequence[tuple[int, int]],
                       unsupported: Sequence[tuple[int, str, str, str]]) -> None:
        """Convert every node. A node that fails does not stop the others: the error lists every unsupported or
        invalid node (nodes that read a failed node's outputs are skipped, and counted). One failing node raises
        its own error; a ResourceError is raised at once."""
        refused = {i for i, *_ in unsupported}
        failed: set[str] = set()
        errors: list[tuple[int, str, str, ModelError]] = []
        skipped = 0
        for i, (node, name, (opset, version)) in enumerate(zip(graph.node, names, plan)):
            if i in refused or any(t in failed for t in node.input if t):
                skipped += i not in refused
                failed.update(o for o in node.output if o)
                continue
            try:
                self._convert_node(node, name, opset, version)
            except ModelError as exc:
                errors.append((i, name, node.op_type, exc))
                failed.update(o for o in node.output if o)
        if not unsupported and len(errors) == 1:
            raise errors[0][3]
        if not unsupported and not errors:
            return
        bad = sorted([(i, name, op, why) for i, name, op, why in unsupported] +
                     [(i, name, op, _reason(exc, name, op)) for i, name, op, exc in errors])
        nodes = [(name, op, why) for _, name, op, why in bad]
        note = (f"{skipped} other node(s) read their outputs and were not converted; they are checked once these "
                "are fixed" if skipped else "")
        message = describe_nodes(nodes, note, list_ops=bool(unsupported))
        static = [exc for *_, exc in errors if isinstance(exc, StaticInputError)]
        if unsupported or all(isinstance(exc, UnsupportedOpError) for *_, exc in errors):
            raise UnsupportedNodesError(message, nodes)
        if static:  # pinning those inputs (--input-value) may fix them: say which, as one StaticInputError does
            raise StaticInputError(message, list(dict.fromkeys(n for exc in static for n in exc.inputs)))
        raise InvalidNodesError(message, nodes)

    def _convert_node(self, node: onnx.NodeProto, name: str, opset: int, version: int) -> None:
        opdef = get_op(node.op_type, onnx_domain(node))
        try:
            opdef.convert(OnnxNode(self, node, name, opdef, opset, version))
        except OpError as exc:
            raise located(exc, f"node {name!r} (op {node.op_type})") from None
        except MemoryError:
            raise ResourceError(f"node {name!r} (op {node.op_type}): the host ran out of memory converting it (a "
                                "constant computed when the network is built); build on a machine with more memory, "
                                "or check the sizes the node is given") from None
        for i, out in enumerate(node.output):
            if out and out in self.used_names and not self.network.has_tensor(out):
                raise UnsupportedOpError(f"node {name!r} (op {node.op_type}): output {i} ({out!r}) is used, "
                                         "but reprobuild does not compute it")

    # --- what OnnxNode calls -------------------------------------------------------------------------------------

    def add_layer(self, name: str, op: str, inputs: Sequence[str], outputs: Sequence[str],
                  attrs: Mapping[str, Any]) -> None:
        """Add a converted layer, or its values when every input is a constant and they are not too large."""
        where = f"node {name!r} (op {op})"
        net = self.network
        infos = infer_infos(op, attrs, [net.tensor(t) for t in inputs], outputs, where)
        constants = [net.constant(t) for t in inputs]
        check_constant_inputs(op, attrs, [TensorType(net.tensor(t).shape, net.tensor(t).dtype) for t in inputs],
                              {i: c for i, c in enumerate(constants) if c is not None}, where)
        # Outputs whose shape depends on a dynamic axis (a Range of the sequence length, a Slice of a position
        # buffer to it) are computed at run time; shape arithmetic on sizes (object arrays of SymInts) folds.
        foldable = (all(c is not None for c in constants) and not any(is_symbolic(i.shape) for i in infos)
                    and sum(i.nbytes for i in infos) <= MAX_FOLDED_BYTES)
        if foldable:
            values = evaluate(op, attrs, [c for c in constants if c is not None], where,
                              [net.tensor(t).dtype for t in inputs])
            for info, value in zip(infos, values):
                net.add_constant(info.name, value, info.dtype)
            self.logger.verbose(f"folded {name} ({op}) into constant(s) {list(outputs)}")
            self.folded += 1
            return
        net.add_layer(name, op, inputs, infos, attrs, origin=(name,))

    def define_constant(self, name: str, value: np.ndarray, node_name: str) -> None:
        self.network.add_constant(name, value)
        self.logger.verbose(f"{node_name} defines {name!r} as a constant")
        self.folded += 1

    def network_inputs_behind(self, tensor: str) -> list[str]:
        """The network inputs a tensor is computed from, in declaration order."""
        producers = {o: layer for layer in self.network.layers for o in layer.outputs}
        seen, stack, found = set(), [tensor], set()
        while stack:
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            if self.network.is_input(t):
                found.add(t)
            elif t in producers:
                stack.extend(producers[t].inputs)
        return [name for name in self.network.input_names if name in found]

    # --- graph inputs and constants ------------------------------------------------------------------------------

    def _add_constants(self, graph: onnx.GraphProto) -> None:
        for init in sorted(graph.initializer, key=lambda t: t.name):
            try:
                dtype_of_elem_type(init.data_type, f"initializer {init.name!r}")
                value = numpy_helper.to_array(init)
            except OpError as exc:
                raise ModelError(str(exc)) from None
            except Exception as exc:
                raise ModelError(f"initializer {init.name!r} cannot be read: {exc}") from None
            self.network.add_constant(init.name, value)
        if graph.sparse_initializer:
            raise ModelError("sparse initializers are not supported")

    def _add_inputs(self, graph: onnx.GraphProto, overrides: dict[str, Sequence[int]],
                    values: dict[str, np.ndarray]) -> None:
        real = [i for i in graph.input if not self.network.has_tensor(i.name)]
        names = [i.name for i in real]
        for name in sorted(set(overrides) - set(names)):
            raise UsageError(f"--input-shape names {name!r}, which is not a network input; inputs are: "
                             f"{', '.join(names)}")
        for name in sorted(set(values) - set(names)):
            raise UsageError(f"--input-value names {name!r}, which is not a network input; inputs are: "
                             f"{', '.join(names)}")
        for vi in real:
            if not vi.type.HasField("tensor_type"):
                kind = vi.type.WhichOneof("value")
                raise ModelError(f"network input {vi.name!r} is a {kind}; only tensor inputs are supported")
            ttype = vi.type.tensor_type
            try:
                dtype = dtype_of_elem_type(ttype.elem_type, f"network input {vi.name!r}")
            except OpError as exc:
                raise ModelError(str(exc)) from None
            dims = [d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 and not d.dim_param else None
                    for d in ttype.shape.dim]
            labels = [d.dim_param or "?" for d in ttype.shape.dim]
            declared = [d if d is not None else lab for d, lab in zip(dims, labels)]
            if vi.name in values:
                self._add_pinned(vi.name, values[vi.name], dims, declared, dtype, ttype.HasField("shape"))
                continue
            if vi.name in overrides:
                shape: list[Any] = [int(s) for s in overrides[vi.name]]
                if len(shape) != len(dims) or any(d is not None and d != s for d, s in zip(dims, shape)):
                    raise UsageError(f"--input-shape {vi.name}={'x'.join(map(str, shape))} does not fit the model's "
                                     f"declared shape {declared}")
                if any(s < 0 for s in shape):
                    raise UsageError(f"--input-shape {vi.name}: every dimension must be a non-negative integer")
            else:
                if not ttype.HasField("shape"):
                    raise DynamicShapeError(f"network input {vi.name!r} declares no shape (not even its rank); "
                                            f"give one with --input-shape {vi.name}=DxD...")
                symbols = [None if d is not None else (lab if lab != "?" else f"{vi.name}:{axis}")
                           for axis, (d, lab) in enumerate(zip(dims, labels))]
                if any(s is not None and s not in self._dynamic for s in symbols):  # a dynamic axis with no range
                    raise DynamicShapeError(_dynamic_dims_message(vi.name, dims, labels, declared))
                shape = [int(d) if d is not None else symbol(str(s)) for d, s in zip(dims, symbols)]
                self._used_symbols.update(s for s in symbols if s is not None)
            problem = shape_problem(shape, itemsize(dtype))  # a dynamic size at the top of its range
            if problem is not None:
                raise ResourceError(f"network input {vi.name!r} of shape {shape} ({dtype}) cannot be built: {problem}; "
                                    "give it a smaller shape")
            self.network.add_input(vi.name, shape, dtype)
            self._declared[vi.name] = tuple(declared) if ttype.HasField("shape") else tuple("?" for _ in shape)
        for vi in graph.input:
            if vi.name not in names:
                self.logger.verbose(f"input {vi.name!r} has an initializer; it is treated as a constant")

    def _add_pinned(self, name: str, value: np.ndarray, dims: list[int | None], declared: list[Any], dtype: str,
                    has_shape: bool) -> None:
        arr = np.asarray(value)
        if has_shape and not dims and arr.size == 1:
            arr = arr.reshape(())  # a scalar input given as one number
        if arr.dtype != np_dtype(dtype):
            cast = arr.astype(np_dtype(dtype))
            if not np.array_equal(cast.astype(arr.dtype), arr):
                raise UsageError(f"--input-value {name}: the values do not fit the input's dtype {dtype}")
            arr = cast
        if has_shape and (arr.ndim != len(dims) or any(d is not None and d != s for d, s in zip(dims, arr.shape))):
            raise UsageError(f"--input-value {name}: the value has shape {list(arr.shape)}, but the model declares "
                             f"{declared}")
        self.network.add_pinned_input(name, arr)

    def _check_declared(self, vi: onnx.ValueInfoProto, info: TensorInfo) -> None:
        if not vi.type.HasField("tensor_type"):
            raise ModelError(f"network output {vi.name!r} is not a tensor; only tensor outputs are supported")
        dims = vi.type.tensor_type.shape.dim
        declared = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        if dims and (len(declared) != len(info.shape)
                     or any(d is not None and d != s for d, s in zip(declared, info.shape))):
            raise ModelError(f"network output {vi.name!r} is declared with shape {declared}, but the graph "
                             f"computes {list(info.shape)}")


def _declared_dims(graph: onnx.GraphProto) -> dict[str, list[int | str]]:
    """Each run-time input's declared dimensions: an int, or the symbol the parser gives a dynamic one."""
    initialized = {t.name for t in graph.initializer}
    out: dict[str, list[int | str]] = {}
    for vi in graph.input:
        if vi.name in initialized or not vi.type.HasField("tensor_type"):
            continue
        dims = vi.type.tensor_type.shape.dim
        out[vi.name] = [d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 and not d.dim_param
                        else (d.dim_param or f"{vi.name}:{axis}") for axis, d in enumerate(dims)]
    return out


def _checked_ranges(ranges: Mapping[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    out = {}
    for name in sorted(ranges):
        lo, hi = (int(v) for v in ranges[name])
        if not SYMBOL.match(name):
            raise UsageError(f"{name!r} is not a dimension symbol (letters, digits, '_', '.', ':')")
        if not 1 <= lo <= hi:
            raise UsageError(f"dynamic dimension {name!r}: the range [{lo}, {hi}] must have 1 <= lowest <= highest")
        out[name] = (lo, hi)
    return out


def _dynamic_dims_message(name: str, dims: Sequence[int | None], labels: Sequence[str],
                          declared: Sequence[Any]) -> str:
    """A network input with dynamic dimensions: which, and a concrete ``--input-shape`` made of the model's own
    static dims with each dynamic one set to 1 (an example, said as such), never a placeholder."""
    axes = [i for i, d in enumerate(dims) if d is None]
    which = ", ".join(f"{labels[i]!r} at axis {i}" for i in axes)
    example = "x".join(str(d) if d is not None else "1" for d in dims)
    plural = "s" if len(axes) > 1 else ""
    top = "x".join(str(d) if d is not None else "8" for d in dims)
    return (f"network input {name!r} has {len(axes)} dynamic dimension{plural} ({which}; declared {declared}); "
            f"give each a size with --input-shape, for example --input-shape {name}={example} (1 for "
            f"{', '.join(repr(labels[i]) for i in axes)}: use the size you will run with), or build one engine for "
            f"a range of sizes with an optimization profile, for example --profile {name}={example}:{top}:{top} "
            "(min:opt:max)")


def _reason(exc: ModelError, name: str, op: str) -> str:
    """An error's message without the "node 'name' (op X): " its list line already starts with."""
    text = str(exc)
    prefix = f"node {name!r} (op {op}): "
    return text[len(prefix):] if text.startswith(prefix) else text


def _layer_names(graph: onnx.GraphProto) -> list[str]:
    """Stable, unique layer names: the node name, or op_index when it is empty or already taken."""
    names, seen = [], set()
    for i, node in enumerate(graph.node):
        name = node.name or f"{node.op_type}_{i}"
        if name in seen:
            name = f"{name}_{i}"
        seen.add(name)
        names.append(name)
    return names


def network_from_onnx_bytes(data: bytes, logger: Logger | None = None,
                            input_shapes: Mapping[str, Sequence[int]] | None = None,
                            input_values: Mapping[str, np.ndarray] | None = None,
                            dynamic: Mapping[str, tuple[int, int]] | None = None,
                            profiles: Sequence[OptimizationProfile] = ()) -> tuple[Network, ModelInfo]:
    """The network of an ONNX model; ``dynamic`` or ``profiles`` keep dynamic dimensions symbolic
    (``OnnxParser.parse``)."""
    network = NetworkDefinition()
    info = OnnxParser(network, logger).parse(data, input_shapes, input_values, dynamic, profiles)
    network.name = info.graph_name or "network"
    with symbol_ranges(info.symbol_ranges):
        return network.finalize(), info


def network_from_onnx_path(path: str | os.PathLike[str], logger: Logger | None = None,
                           input_shapes: Mapping[str, Sequence[int]] | None = None,
                           input_values: Mapping[str, np.ndarray] | None = None,
                           dynamic: Mapping[str, tuple[int, int]] | None = None,
                           profiles: Sequence[OptimizationProfile] = ()) -> tuple[Network, ModelInfo]:
    return network_from_onnx_bytes(read_bounded(path, MAX_MODEL_BYTES, "model", ModelError), logger, input_shapes,
                                   input_values, dynamic, profiles)

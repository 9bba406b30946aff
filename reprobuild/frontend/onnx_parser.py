"""The ONNX frontend: load and check a model, resolve input shapes, convert nodes, fold constants.

Loading never executes code from the file (protobuf only), refuses external data and oversized files, and turns
every problem into a :class:`~reprobuild.errors.ModelError` that names the node and the op.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from reprobuild.digest import sha256_hex
from reprobuild.errors import DynamicShapeError, ModelError, UnsupportedOpError, UsageError
from reprobuild.evaluate import evaluate_layer
from reprobuild.frontend.onnx_ops import CONVERTERS, unsupported_op
from reprobuild.ir import Layer, Network, NetworkDefinition, TensorInfo, make_attrs
from reprobuild.logger import Logger, Severity
from reprobuild.ops import infer_shapes

#: protobuf cannot hold more than 2 GiB; larger models need external data, which is not supported.
MAX_MODEL_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class ModelInfo:
    """What identifies the model file a network came from; recorded in the manifest."""

    sha256: str
    size_bytes: int
    ir_version: int
    opset: int
    producer: str
    graph_name: str


def _np_dtype(elem_type: int, what: str) -> str:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name
    except Exception:
        raise ModelError(f"{what} has ONNX element type {elem_type}, which has no NumPy equivalent") from None


class NodeContext:
    """One node under conversion: its decoded attributes, its inputs' infos and constants, and ``emit``."""

    def __init__(self, parser: OnnxParser, node: onnx.NodeProto, name: str, opset: int) -> None:
        self.parser, self.node, self.name, self.opset = parser, node, name, opset
        self.net = parser.network
        self.attrs: dict[str, Any] = {}
        for a in node.attribute:
            value = onnx.helper.get_attribute_value(a)
            if isinstance(value, onnx.TensorProto):
                value = numpy_helper.to_array(value)
            elif isinstance(value, bytes):
                value = value.decode("utf-8", errors="replace")
            self.attrs[a.name] = value
        names = list(node.input)
        while names and not names[-1]:
            names.pop()
        if "" in names:
            raise self.fail("an optional input in the middle is omitted; this is not supported")
        self.inputs: list[str] = names
        for t in self.inputs:
            if not self.net.has_tensor(t):
                raise self.fail(f"input {t!r} is not defined before this node (the graph is not topologically sorted)")

    def fail(self, message: str) -> UnsupportedOpError:
        return UnsupportedOpError(f"node {self.name!r} (op {self.node.op_type}): {message}")

    def input_info(self, i: int) -> TensorInfo:
        return self.net.tensor(self.inputs[i])

    def const(self, i: int) -> np.ndarray | None:
        return self.net.constant(self.inputs[i]) if i < len(self.inputs) else None

    def used_outputs(self) -> int:
        """How many leading outputs are used (consumed, or network outputs); later ones must be unused."""
        used = [bool(o) and o in self.parser.used_names for o in self.node.output]
        return max((i + 1 for i, u in enumerate(used) if u), default=0)

    def define_constant(self, value: np.ndarray) -> None:
        self.net.add_constant(self.node.output[0], value)

    def emit(self, op: str, attrs: Mapping[str, Any], inputs: Sequence[str] | None = None,
             n_outputs: int | None = None) -> None:
        ins = tuple(inputs if inputs is not None else self.inputs)
        outs = tuple(self.node.output[: n_outputs or len(self.node.output)])
        layer = Layer(self.name, op, ins, outs, make_attrs(attrs))
        shapes = infer_shapes(layer, [self.net.tensor(t).shape for t in ins])
        dtype = self.net.tensor(ins[0]).dtype
        infos = [TensorInfo(o, s, dtype) for o, s in zip(outs, shapes)]
        constants = [self.net.constant(t) for t in ins]
        if all(c is not None for c in constants):
            values = evaluate_layer(layer, [c for c in constants if c is not None], infos)
            for info, value in zip(infos, values):
                self.net.add_constant(info.name, value)
            self.parser.logger.verbose(f"folded {self.name} ({op}) into constant(s) {list(outs)}")
            self.parser.folded += 1
            return
        self.net.add_layer(self.name, op, ins, infos, attrs)


class OnnxParser:
    """Fills a NetworkDefinition from ONNX bytes, as TensorRT's ``OnnxParser(network, logger)``."""

    def __init__(self, network: NetworkDefinition, logger: Logger | None = None) -> None:
        self.network = network
        self.logger = logger or Logger()
        self.used_names: set[str] = set()
        self.folded = 0
        self.model_info: ModelInfo | None = None

    def parse_from_file(self, path: str | os.PathLike[str],
                        input_shapes: Mapping[str, Sequence[int]] | None = None) -> ModelInfo:
        try:
            size = os.path.getsize(path)
        except OSError as exc:
            raise UsageError(f"cannot read model {os.fspath(path)!r}: {exc.strerror or exc}") from None
        if size > MAX_MODEL_BYTES:
            raise ModelError(f"model file {os.fspath(path)!r} is {size} bytes; the limit is {MAX_MODEL_BYTES}")
        with open(path, "rb") as f:
            return self.parse(f.read(), input_shapes)

    def parse(self, data: bytes, input_shapes: Mapping[str, Sequence[int]] | None = None) -> ModelInfo:
        if len(data) > MAX_MODEL_BYTES:
            raise ModelError(f"model is {len(data)} bytes; the limit is {MAX_MODEL_BYTES}")
        with ThreadPoolExecutor(max_workers=1) as pool:  # hashing releases the GIL: overlap it with parsing
            digest = pool.submit(sha256_hex, data)
            info = self._parse(data, input_shapes)
            self.model_info = dataclasses.replace(info, sha256=digest.result())
        self.network.source = dataclasses.asdict(self.model_info)
        return self.model_info

    def _parse(self, data: bytes, input_shapes: Mapping[str, Sequence[int]] | None) -> ModelInfo:
        try:
            model = onnx.load_model_from_string(data)
        except Exception as exc:
            raise ModelError(f"not a readable ONNX model (protobuf decode failed: {exc})") from None
        try:
            onnx.checker.check_model(data)  # the bytes we have: checking the proto would serialize it again
        except Exception as exc:
            raise ModelError(f"the ONNX checker rejects the model: {exc}") from None
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        if opset < 7:
            raise ModelError(f"default-domain opset {opset} is too old; reprobuild supports opset 7 and newer")
        graph = model.graph
        self.used_names = {t for n in graph.node for t in n.input if t} | {o.name for o in graph.output}
        self._add_constants(graph)
        self._add_inputs(graph, dict(input_shapes or {}))
        names = _layer_names(graph)
        for node, name in zip(graph.node, names):
            if node.domain not in ("", "ai.onnx") or node.op_type not in CONVERTERS:
                raise UnsupportedOpError(f"node {name!r}: {unsupported_op(node.op_type, node.domain)}")
            support = CONVERTERS[node.op_type]
            ctx = NodeContext(self, node, name, opset)
            unknown = sorted(set(ctx.attrs) - support.attributes)
            if unknown:
                raise ctx.fail(f"attribute(s) {unknown} are not supported; supported: {sorted(support.attributes)}")
            support.convert(ctx)
        for out in graph.output:
            if not self.network.has_tensor(out.name):
                raise ModelError(f"network output {out.name!r} is not produced by any node")
            self._check_declared(out, self.network.tensor(out.name))
            self.network.mark_output(out.name)
        self.logger.log(Severity.INFO, f"parsed ONNX model (opset {opset}): {self.network.num_layers} layers, "
                                       f"{self.folded} node(s) folded into constants")
        return ModelInfo(
            sha256="", size_bytes=len(data), ir_version=int(model.ir_version), opset=int(opset),
            producer=f"{model.producer_name} {model.producer_version}".strip(), graph_name=graph.name,
        )

    def _add_constants(self, graph: onnx.GraphProto) -> None:
        for init in sorted(graph.initializer, key=lambda t: t.name):
            if init.data_location == onnx.TensorProto.EXTERNAL:
                raise ModelError(f"initializer {init.name!r} uses external data, which is not supported; "
                                 "save the model with its weights inside (onnx.save(..., save_as_external_data=False))")
            try:
                value = numpy_helper.to_array(init)
            except Exception as exc:
                raise ModelError(f"initializer {init.name!r} cannot be read: {exc}") from None
            self.network.add_constant(init.name, value)

    def _add_inputs(self, graph: onnx.GraphProto, overrides: dict[str, Sequence[int]]) -> None:
        real = [i for i in graph.input if not self.network.has_tensor(i.name)]
        for name in sorted(set(overrides) - {i.name for i in real}):
            raise UsageError(f"--input-shape names {name!r}, which is not a network input; inputs are: "
                             f"{', '.join(i.name for i in real)}")
        for vi in real:
            ttype = vi.type.tensor_type
            if not vi.type.HasField("tensor_type"):
                raise ModelError(f"network input {vi.name!r} is not a tensor; only tensor inputs are supported")
            dtype = _np_dtype(ttype.elem_type, f"network input {vi.name!r}")
            if dtype != "float32":
                raise ModelError(f"network input {vi.name!r} has dtype {dtype}; only float32 inputs are supported")
            dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in ttype.shape.dim]
            labels = [d.dim_param or "?" for d in ttype.shape.dim]
            if vi.name in overrides:
                shape = [int(s) for s in overrides[vi.name]]
                if len(shape) != len(dims) or any(d is not None and d != s for d, s in zip(dims, shape)):
                    raise UsageError(f"--input-shape {vi.name}={'x'.join(map(str, shape))} does not fit the model's "
                                     f"declared shape {[d if d is not None else lab for d, lab in zip(dims, labels)]}")
                if any(s < 1 for s in shape):
                    raise UsageError(f"--input-shape {vi.name}: every dimension must be a positive integer")
            else:
                if any(d is None for d in dims):
                    axis = next(i for i, d in enumerate(dims) if d is None)
                    raise DynamicShapeError(
                        f"network input {vi.name!r} has a dynamic dimension {labels[axis]!r} at axis {axis} "
                        f"(declared {[d if d is not None else lab for d, lab in zip(dims, labels)]}); engines have "
                        f"fixed shapes, so fix it with --input-shape {vi.name}=" +
                        "x".join(str(d) if d is not None else "N" for d in dims)
                    )
                shape = [int(d) for d in dims if d is not None]
            self.network.add_input(vi.name, shape, dtype)
        for vi in graph.input:
            if self.network.constant(vi.name) is not None:
                self.logger.verbose(f"input {vi.name!r} has an initializer; it is treated as a constant")

    def _check_declared(self, vi: onnx.ValueInfoProto, info: TensorInfo) -> None:
        dims = vi.type.tensor_type.shape.dim
        declared = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        if dims and (len(declared) != len(info.shape)
                     or any(d is not None and d != s for d, s in zip(declared, info.shape))):
            raise ModelError(f"network output {vi.name!r} is declared with shape {declared}, but the graph "
                             f"computes {list(info.shape)}")


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
                            input_shapes: Mapping[str, Sequence[int]] | None = None) -> tuple[Network, ModelInfo]:
    network = NetworkDefinition()
    info = OnnxParser(network, logger).parse(data, input_shapes)
    network.name = info.graph_name or "network"
    return network.finalize(), info


def network_from_onnx_path(path: str | os.PathLike[str], logger: Logger | None = None,
                           input_shapes: Mapping[str, Sequence[int]] | None = None) -> tuple[Network, ModelInfo]:
    network = NetworkDefinition()
    info = OnnxParser(network, logger).parse_from_file(path, input_shapes)
    network.name = info.graph_name or "network"
    return network.finalize(), info

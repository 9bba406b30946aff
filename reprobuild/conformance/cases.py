"""The conformance suites, generated from what the ``onnx`` wheel ships:

- ``node``: ONNX's node test suite, made from the definitions in ``onnx.backend.test.case.node`` (as
  ``backend-test-tools generate-data`` does), each with its inputs and expected outputs;
- ``light``: the nine ``light_*`` models, whose ConstantOfShape weights are replaced by seeded random ones
  (their own weights make nearly uniform outputs that prove little); the reference is onnxruntime, and the
  logits before a final Softmax (which saturates) are compared too;
- ``pytorch``: the ``pytorch-converted`` and ``pytorch-operator`` models with their stored test data.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.backend.test.case import node as node_suite

SUITES = ("node", "light", "pytorch")
DATA = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
#: onnx's backend tests compare with these unless a case says otherwise.
DEFAULT_RTOL, DEFAULT_ATOL = 1e-3, 1e-7
#: Randomized models accumulate rounding over many layers; the tolerance the issue's model checks use.
MODEL_RTOL, MODEL_ATOL = 1e-3, 1e-4


@dataclass
class Case:
    suite: str
    name: str
    model: bytes
    inputs: dict[str, np.ndarray]
    #: expected outputs by name; None when the reference (onnxruntime) computes them
    expected: dict[str, np.ndarray] | None
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL
    notes: list[str] = field(default_factory=list)

    @property
    def proto(self) -> onnx.ModelProto:
        return onnx.ModelProto.FromString(self.model)


def _graph_inputs(model: onnx.ModelProto) -> list[str]:
    inits = {t.name for t in model.graph.initializer}
    return [vi.name for vi in model.graph.input if vi.name not in inits]


def _array(value: Any) -> Any:
    """A case's data as a NumPy array: the cases give some as NumPy scalars, and the narrow types (float8, int4,
    ...) as TensorProtos; sequences and optionals stay as they are (reprobuild refuses those models)."""
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, np.generic):
        return np.asarray(value)
    return value


def node_cases() -> Iterator[Case]:
    with warnings.catch_warnings():  # the case definitions overflow casts on purpose
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            cases = node_suite.collect_testcases(None)
    for case in sorted(cases, key=lambda c: c.name):
        model, data = case.model, case.data_sets
        assert model is not None and data, f"node case {case.name} has no model or data"
        names = _graph_inputs(model)
        inputs_list, outputs_list = data[0]
        outputs = [o.name for o in model.graph.output]
        yield Case("node", case.name, model.SerializeToString(),
                   {n: _array(v) for n, v in zip(names, inputs_list)},
                   {n: _array(v) for n, v in zip(outputs, outputs_list)}, case.rtol, case.atol)


def randomize_constant_of_shape(model: onnx.ModelProto, seed: int) -> onnx.ModelProto:
    """Replace each ConstantOfShape whose shape is an initializer by a seeded random initializer: He-normal for
    rank >= 2 (std sqrt(2 / fan_in)), uniform(0.5, 1.5) for rank 1 (keeps BatchNormalization variances
    positive)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    rng = np.random.default_rng(seed)
    inits = {t.name: t for t in model.graph.initializer}
    kept = []
    for node in model.graph.node:
        if node.op_type == "ConstantOfShape" and node.input and node.input[0] in inits:
            shape = tuple(int(d) for d in numpy_helper.to_array(inits[node.input[0]]).reshape(-1))
            if len(shape) >= 2:
                value = rng.standard_normal(shape) * np.sqrt(2.0 / int(np.prod(shape[1:])))
            else:
                value = rng.uniform(0.5, 1.5, size=shape)
            model.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), node.output[0]))
            if model.ir_version < 4:  # before IR 4, every initializer must also be a graph input
                model.graph.input.append(helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, shape))
        else:
            kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return model


def expose_logits(model: onnx.ModelProto) -> str | None:
    """Add the input of a final Softmax as an extra graph output; its name, or None without a final Softmax."""
    outputs = {o.name for o in model.graph.output}
    for node in model.graph.node:
        if node.op_type == "Softmax" and node.output[0] in outputs and node.input[0] not in outputs:
            inferred = onnx.shape_inference.infer_shapes(model)
            info = {vi.name: vi for vi in inferred.graph.value_info}.get(node.input[0])
            if info is None or not info.type.tensor_type.HasField("shape"):
                return None
            model.graph.output.append(info)
            return str(node.input[0])
    return None


def random_feeds(model: onnx.ModelProto, rng: np.random.Generator) -> dict[str, np.ndarray]:
    feeds = {}
    for vi in model.graph.input:
        if vi.name in {t.name for t in model.graph.initializer}:
            continue
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        feeds[vi.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def light_cases(seed: int = 0) -> Iterator[Case]:
    folder = os.path.join(DATA, "light")
    for i, file in enumerate(sorted(f for f in os.listdir(folder) if f.endswith(".onnx"))):
        model = randomize_constant_of_shape(onnx.load(os.path.join(folder, file)), seed + i)
        logits = expose_logits(model)
        notes = ["ConstantOfShape weights re-randomized (seeded)"]
        if logits:
            notes.append(f"logits before the final Softmax ({logits!r}) compared too")
        yield Case("light", file[:-len(".onnx")], model.SerializeToString(),
                   random_feeds(model, np.random.default_rng(seed + 100 + i)), None, MODEL_RTOL, MODEL_ATOL, notes)


def _read_tensor(path: str) -> np.ndarray:
    tensor = TensorProto()
    with open(path, "rb") as f:
        tensor.ParseFromString(f.read())
    return numpy_helper.to_array(tensor)


def pytorch_cases() -> Iterator[Case]:
    for group in ("pytorch-converted", "pytorch-operator"):
        folder = os.path.join(DATA, group)
        for name in sorted(os.listdir(folder)):
            directory = os.path.join(folder, name)
            data = os.path.join(directory, "test_data_set_0")
            if not os.path.isdir(data):
                continue
            model = onnx.load(os.path.join(directory, "model.onnx"))
            files = sorted(os.listdir(data))
            count = sum(1 for f in files if f.startswith("input_"))
            inputs = [_read_tensor(os.path.join(data, f"input_{k}.pb")) for k in range(count)]
            outputs = [_read_tensor(os.path.join(data, f"output_{k}.pb"))
                       for k in range(sum(1 for f in files if f.startswith("output_")))]
            yield Case("pytorch", f"{group}/{name}", model.SerializeToString(),
                       dict(zip(_graph_inputs(model), inputs)),
                       {o.name: v for o, v in zip(model.graph.output, outputs)})


def load_suite(suite: str) -> list[Case]:
    loaders = {"node": node_cases, "light": light_cases, "pytorch": pytorch_cases}
    return list(loaders[suite]())

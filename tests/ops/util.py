"""Helpers for the op tests: one-node ONNX models of any dtype, the whole pipeline on them, and onnxruntime.

Typical use, comparing the engine (on each backend) with onnxruntime on fresh random inputs::

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_exp(backend, rng):
        x = rng.standard_normal((3, 4)).astype(np.float32)
        check_op("Exp", {"x": x}, backend=backend)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from reprobuild.builder import Builder, BuilderConfig
from reprobuild.core.logger import Logger, Severity
from reprobuild.engine import Runtime
from reprobuild.frontend import network_from_onnx_bytes
from tests.helpers import BACKENDS

__all__ = ["BACKENDS", "build_and_run", "check_op", "node_model", "ort_outputs"]


def _elem_type(dtype: Any) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def default_opset(op: str) -> int:
    """Opset 22, or the opset of the op's newest version when that is newer: the oldest opset that holds the op's
    newest form, so that older onnxruntimes (the GPU host's reads IR versions up to 13) can load the model."""
    newest = max((s.since_version for s in onnx.defs.get_all_schemas_with_history() if s.name == op
                  and s.domain == ""), default=22)
    return min(max(22, newest), onnx.defs.onnx_opset_version())


def node_model(op: str, inputs: Mapping[str, np.ndarray], n_outputs: int = 1,
               initializers: Mapping[str, np.ndarray] | None = None, opset: int | None = None,
               input_names: Sequence[str] | None = None, output_names: Sequence[str] | None = None,
               **attrs: Any) -> onnx.ModelProto:
    """A model of one ``op`` node. ``inputs`` become graph inputs (with their arrays' shapes and dtypes),
    ``initializers`` constants; ``input_names`` orders the node's inputs ("" for an omitted one), by default
    graph inputs then initializers. ``opset`` defaults to ``default_opset(op)``."""
    initializers = dict(initializers or {})
    names = list(input_names) if input_names is not None else [*inputs, *initializers]
    outs = list(output_names) if output_names is not None else [f"y{i}" if n_outputs > 1 else "y"
                                                                for i in range(n_outputs)]
    node = helper.make_node(op, names, outs, **attrs)
    graph = helper.make_graph(
        [node], "test",
        [helper.make_tensor_value_info(k, _elem_type(v.dtype), list(v.shape)) for k, v in inputs.items()],
        [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in outs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()],
    )
    version = opset if opset is not None else default_opset(op)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", version)])
    # the oldest IR version that can hold this opset: older onnxruntimes (the GPU host's) load it
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {vi.name: vi for vi in (*inferred.graph.value_info, *inferred.graph.output)}
    del model.graph.output[:]
    model.graph.output.extend(known[o] if known.get(o) is not None and known[o].type.tensor_type.elem_type
                              else helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None) for o in outs)
    return model


def build_and_run(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], backend: str = "cpu",
                  input_values: Mapping[str, np.ndarray] | None = None,
                  passes: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Parse, build (one timing sample per tactic; the default passes, or ``passes``), serialize, load and run:
    the whole pipeline."""
    quiet = Logger(Severity.ERROR)
    network, _ = network_from_onnx_bytes(model.SerializeToString(), quiet, input_values=input_values)
    config = BuilderConfig(backend=backend, warmup=0, iterations=1, runs_per_sample=1)
    if passes is not None:
        config = dataclasses.replace(config, passes=tuple(passes))
    result = Builder(quiet).build(network, config)
    context = Runtime(quiet).deserialize_engine(result.engine).create_execution_context()
    return context.execute(dict(feeds))


def ort_outputs(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """onnxruntime on the CPU with graph optimizations off: the independent reference."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, dict(feeds))))


def check_op(op: str, inputs: Mapping[str, np.ndarray], backend: str = "cpu", n_outputs: int = 1,
             initializers: Mapping[str, np.ndarray] | None = None, opset: int | None = None,
             pinned: Sequence[str] = (), expected: Mapping[str, np.ndarray] | None = None, rtol: float = 1e-5,
             atol: float = 1e-6, input_names: Sequence[str] | None = None, **attrs: Any) -> dict[str, np.ndarray]:
    """Build a one-node model and compare the engine's outputs (shape, dtype, values) with onnxruntime's, or
    with ``expected``. Inputs named in ``pinned`` have their values fixed at build time (--input-value)."""
    model = node_model(op, inputs, n_outputs, initializers, opset, input_names, **attrs)
    values = {k: inputs[k] for k in pinned}
    got = build_and_run(model, inputs, backend, values)
    if expected is not None:
        want = dict(expected)
    else:
        try:
            want = ort_outputs(model, inputs)
        except Exception as exc:  # an onnxruntime too old for this opset: the CPU engine, checked against it in CI
            if backend == "cpu" or "onnxruntime" not in type(exc).__module__:
                raise
            want = build_and_run(model, inputs, "cpu", values)
    for name, ref in want.items():
        out = got[name]
        ref = np.asarray(ref)
        assert out.shape == ref.shape, f"{op} {name}: shape {out.shape} != {ref.shape}"
        assert out.dtype == ref.dtype, f"{op} {name}: dtype {out.dtype} != {ref.dtype}"
        if out.dtype.kind in "biu":
            np.testing.assert_array_equal(out, ref, err_msg=f"{op} {name} on {backend}")
        else:
            np.testing.assert_allclose(out.astype(np.float64), ref.astype(np.float64), rtol=rtol, atol=atol,
                                       equal_nan=True, err_msg=f"{op} {name} on {backend}")
    return got

"""Helpers shared by the tests: single-node ONNX models, the onnxruntime reference, randomized light models."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from reprobuild.conformance.cases import randomize_constant_of_shape
from reprobuild.core.dtypes import np_dtype
from reprobuild.kernels.backend import cuda_unavailable_reason, device_count

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(REPO, "examples")
LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")

CUDA_SKIP = cuda_unavailable_reason()

#: cpu always; cuda as a gpu-marked param that skips, with the reason, where no device is usable.
BACKENDS = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(CUDA_SKIP is not None,
                                                                    reason=f"no CUDA: {CUDA_SKIP}")]),
]


def several_gpus() -> int:
    """The number of visible GPUs, for a multi-device test; skips it where there are fewer than 2."""
    count = device_count()
    if count < 2:
        pytest.skip(f"needs 2 or more GPUs; this host has {count}")
    return count


def make_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Mapping[str, Sequence[int]],
    outputs: Sequence[str],
    initializers: Mapping[str, np.ndarray] | None = None,
    opset: int = 17,
    dtype: str = "float32",
) -> onnx.ModelProto:
    """A model of ``nodes`` whose inputs and outputs have ``dtype``, outputs declared with ONNX's inferred shapes."""
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    graph = helper.make_graph(
        list(nodes), "test",
        [helper.make_tensor_value_info(k, elem, list(v)) for k, v in inputs.items()],
        [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in outputs],  # inferred below
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (initializers or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    # Declare the outputs with the shapes ONNX infers, so the model is complete and passes the checker.
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    known = {vi.name: vi for vi in (*inferred.graph.value_info, *inferred.graph.output)}
    del model.graph.output[:]
    model.graph.output.extend(known[o] for o in outputs)
    return model


def with_float_dtype(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray],
                     dtype: str) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The model and feeds with every float16/float32 initializer, graph input and output in ``dtype``: a float16
    test case from a float32 one, and back, for an onnxruntime reference on the float16 case's exact values."""
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
    target = np_dtype(dtype)
    elem = helper.np_dtype_to_tensor_dtype(target)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for i, init in enumerate(out.graph.initializer):
        if init.data_type in floats:
            out.graph.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(target),
                                                                      init.name))
    for vi in (*out.graph.input, *out.graph.output, *out.graph.value_info):
        if vi.type.tensor_type.elem_type in floats:
            vi.type.tensor_type.elem_type = elem
    return out, {k: v.astype(target) if v.dtype.kind == "f" or v.dtype.name == "bfloat16" else v
                 for k, v in feeds.items()}


def ort_run(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """onnxruntime on the CPU with graph optimizations off: the independent reference."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return [np.asarray(v) for v in session.run(None, dict(feeds))]


def rel_error(out: np.ndarray, ref: np.ndarray) -> float:
    """||out - ref|| / ||ref|| in float64; NaN or a shape mismatch counts as infinitely wrong."""
    if out.shape != ref.shape or not np.all(np.isfinite(out)):
        return float("inf")
    denom = float(np.linalg.norm(ref.astype(np.float64)))
    return float(np.linalg.norm(out.astype(np.float64) - ref.astype(np.float64))) / max(denom, 1e-30)


def assert_close(out: np.ndarray, ref: np.ndarray, rtol: float = 1e-4, atol: float = 1e-5, rel: float = 1e-5,
                 what: str = "") -> None:
    assert out.shape == ref.shape, f"{what}: shape {out.shape} != reference {ref.shape}"
    assert out.dtype == ref.dtype, f"{what}: dtype {out.dtype} != reference {ref.dtype}"
    if out.dtype.name == "bfloat16":  # NumPy's own arithmetic on the exact float32 values
        out, ref = out.astype(np.float32), ref.astype(np.float32)
    err = rel_error(out, ref)
    assert err <= rel, f"{what}: relative error {err:.3g} > {rel:g}"
    np.testing.assert_allclose(out, ref, rtol=rtol, atol=atol, err_msg=what)


def tactic_tolerance(math: str | None, dtype: str = "float32") -> dict[str, float]:
    """assert_close's tolerances for a tactic: the defaults, or those of TF32 (10-bit mantissa inputs, float32
    sums), of float16 tensors (a 10-bit mantissa stored after every layer) and of bfloat16 tensors (7 bits)."""
    if dtype == "bfloat16":
        return {"rtol": 6e-2, "atol": 6e-2, "rel": 3e-2}
    return {"rtol": 1e-2, "atol": 1e-2, "rel": 5e-3} if math == "tf32" or dtype == "float16" else {}


def light_model(name: str, seed: int) -> onnx.ModelProto:
    return randomize_constant_of_shape(onnx.load(os.path.join(LIGHT, name)), seed)


def model_inputs(model: onnx.ModelProto, rng: np.random.Generator) -> dict[str, np.ndarray]:
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        feeds[vi.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``reprobuild ARGS`` in this process: (exit code, stdout, stderr)."""
    from reprobuild.cli.main import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def cli_env() -> dict[str, str]:
    """The environment for a ``reprobuild`` subprocess: this interpreter's scripts first on PATH."""
    return {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}


def to_host(value: Any) -> np.ndarray:
    return value.get() if hasattr(value, "get") and not isinstance(value, np.ndarray) else np.asarray(value)


def race(work: Callable[[int], None], threads: int, name: str = "racer") -> None:
    """Run ``work(i)`` in ``threads`` threads at once (named ``name-i``), with the interpreter switching threads as
    often as it can, so that a race, if there is one, shows."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        workers = [threading.Thread(target=work, args=(i,), name=f"{name}-{i}") for i in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    finally:
        sys.setswitchinterval(interval)

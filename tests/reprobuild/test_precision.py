"""The precision flag (TensorRT's builder flags): recorded in the manifest with each layer's precision, TF32
tactics allowed only at tf32, fp16 and bf16 layers made by the ``reduce_precision_fp16``/``_bf16`` passes (casts
at the engine's inputs and outputs, narrow constants, float32 kept where an op has no narrow form), unknown
precisions refused, compare's tolerances by precision."""

from __future__ import annotations

import json
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import helper

from reprobuild.builder import Builder, BuilderConfig, ReplaySelector
from reprobuild.core.errors import UsageError
from reprobuild.engine import Runtime
from reprobuild.frontend import network_from_onnx_bytes, network_from_onnx_path
from reprobuild.ir import Network
from reprobuild.passes.precision import reduce_precision
from tests.helpers import EXAMPLES, assert_close, make_model, model_inputs, ort_run, run_cli


@pytest.mark.parametrize("precision", ["fp32", "tf32"])
def test_the_manifest_records_the_flag_and_each_layers_precision(precision: str) -> None:
    network, _ = network_from_onnx_path(f"{EXAMPLES}/small_cnn.onnx")
    pinned = Builder().build(network, BuilderConfig(backend="cpu", iterations=1, precision=precision)).manifest.pinned
    assert pinned.config.precision == precision
    # the CPU has no TF32 arithmetic: every float layer computes in fp32 whatever the flag allows
    assert {layer.precision for layer in pinned.layers} == {"fp32"}


def test_an_unknown_precision_is_refused_with_the_choices() -> None:
    network, _ = network_from_onnx_path(f"{EXAMPLES}/mlp.onnx")
    with pytest.raises(UsageError, match="precision must be one of fp32, tf32, fp16, bf16; got 'int8'"):
        Builder().build(network, BuilderConfig(backend="cpu", precision="int8"))  # type: ignore[arg-type]


#: (precision flag, the dtype its layers run in, the tolerance of its end-to-end comparison with fp32)
NARROW = [("fp16", "float16", 5e-2), ("bf16", "bfloat16", 2e-1)]


@pytest.mark.parametrize(("precision", "dtype", "tol"), NARROW)
@pytest.mark.parametrize("example", ["small_cnn", "mlp"])
def test_a_narrow_build_runs_its_layers_narrow_and_keeps_float32_inputs_and_outputs(
        example: str, precision: str, dtype: str, tol: float, rng: np.random.Generator) -> None:
    model = onnx.load(f"{EXAMPLES}/{example}.onnx")
    network, _ = network_from_onnx_path(f"{EXAMPLES}/{example}.onnx")
    result = Builder().build(network, BuilderConfig(backend="cpu", iterations=1, precision=precision))
    pinned = result.manifest.pinned
    assert pinned.config.precision == precision
    assert pinned.config.passes[-1].name == f"reduce_precision_{precision}"
    assert {t.dtype for t in (*pinned.inputs, *pinned.outputs)} == {"float32"}
    casts = [layer for layer in pinned.layers if layer.op == "Cast"]
    # one cast in per network input, one out per network output; every other layer computes narrow
    assert len(casts) == len(pinned.inputs) + len(pinned.outputs)
    assert {layer.precision for layer in pinned.layers if layer.op != "Cast"} == {precision}
    assert all(layer.onnx_nodes for layer in casts)  # a cast names the ONNX nodes of the layer it serves
    engine = Runtime().deserialize_engine(result.engine)
    feeds = model_inputs(model, rng)
    got = engine.create_execution_context().execute(feeds)
    for name, want in zip([o.name for o in model.graph.output], ort_run(model, feeds)):
        assert got[name].dtype == np.float32
        assert_close(got[name], want, rtol=tol, atol=tol, rel=tol / 2.5,
                     what=f"{example} {precision} vs onnxruntime fp32")


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_a_narrow_manifest_replays_to_the_same_engine(precision: str) -> None:
    network, _ = network_from_onnx_path(f"{EXAMPLES}/small_cnn.onnx")
    timed = Builder().build(network, BuilderConfig(backend="cpu", iterations=1, precision=precision))
    config = BuilderConfig.from_record(timed.manifest.pinned.config)
    assert config.effective_passes == tuple(p.name for p in timed.manifest.pinned.config.passes)  # not added twice
    config.algorithm_selector = ReplaySelector(timed.manifest)
    replayed = Builder().build(network_from_onnx_path(f"{EXAMPLES}/small_cnn.onnx")[0], config)
    assert replayed.engine == timed.engine


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_the_precision_pass_is_the_flags_to_add(precision: str) -> None:
    network, _ = network_from_onnx_path(f"{EXAMPLES}/mlp.onnx")
    passes = (*BuilderConfig().passes, f"reduce_precision_{precision}")
    with pytest.raises(UsageError, match=f"belongs to --precision {precision}"):
        Builder().build(network, BuilderConfig(backend="cpu", passes=passes))


def _half(nodes: list, inputs: dict, outputs: list, inits: dict | None = None, dtype: str = "float16") -> Network:
    model = make_model(nodes, inputs, outputs, inits)
    network, _ = network_from_onnx_bytes(model.SerializeToString())
    return reduce_precision(network, dtype)


def test_a_tensor_is_cast_once_however_many_half_layers_read_it() -> None:
    net = _half([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Sigmoid", ["x"], ["b"]),
                 helper.make_node("Add", ["a", "b"], ["y"])], {"x": (2, 3)}, ["y"])
    assert [layer.op for layer in net.layers] == ["Cast", "Relu", "Sigmoid", "Add", "Cast"]
    assert net.tensors["a"].dtype == net.tensors["b"].dtype == "float16"
    assert [t.dtype for t in (*net.inputs, *net.outputs)] == ["float32", "float32"]


@pytest.mark.parametrize(("dtype", "narrow_slice"), [("float16", True), ("bfloat16", False)])
def test_a_slice_runs_in_half_but_keeps_float32_in_bfloat16(dtype: str, narrow_slice: bool) -> None:
    # no CUDA kernel stores bfloat16 for Slice yet: under bf16 it stays float32 between casts
    net = _half([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Slice", ["a", "s", "e"], ["b"]),
                 helper.make_node("Relu", ["b"], ["y"])], {"x": (4, 6)}, ["y"],
                {"s": np.array([1], np.int64), "e": np.array([4], np.int64)}, dtype)
    layer = next(layer for layer in net.layers if layer.op == "Slice")
    assert net.tensors[layer.outputs[0]].dtype == (dtype if narrow_slice else "float32")
    casts = [layer for layer in net.layers if layer.op == "Cast"]
    assert len(casts) == (2 if narrow_slice else 4)  # in and out, plus one each way around the float32 Slice


def test_an_op_without_a_half_form_keeps_float32_between_casts() -> None:
    # ReduceMean is not among the half ops: its input is cast back to float32, its output cast to half again
    net = _half([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("ReduceMean", ["a"], ["m"], keepdims=1),
                 helper.make_node("Mul", ["a", "m"], ["y"])], {"x": (2, 3)}, ["y"])
    ops = [(layer.op, net.tensors[layer.outputs[0]].dtype) for layer in net.layers]
    assert ops == [("Cast", "float16"), ("Relu", "float16"), ("Cast", "float32"), ("ReduceMean", "float32"),
                   ("Cast", "float16"), ("Mul", "float16"), ("Cast", "float32")]


BF16_MAX = float(ml_dtypes.finfo(ml_dtypes.bfloat16).max)


@pytest.mark.parametrize(("dtype", "big", "limit"), [("float16", 1e6, 65504.0), ("bfloat16", 3.4e38, BF16_MAX)])
def test_narrow_constants_are_clamped_to_the_finite_range_and_indices_keep_their_dtype(
        dtype: str, big: float, limit: float) -> None:
    w = np.array([[big, -big, np.nan], [np.inf, 0.1, -3.0]], dtype=np.float32)
    net = _half([helper.make_node("MatMul", ["x", "w"], ["m"]),
                 helper.make_node("Gather", ["m", "i"], ["y"], axis=1)], {"x": (4, 2)}, ["y"],
                {"w": w, "i": np.array([2, 0], dtype=np.int64)}, dtype)
    matmul = next(layer for layer in net.layers if layer.op == "MatMul")
    half = net.constants[matmul.inputs[1]]
    assert half.dtype.name == dtype and "w" not in net.constants  # the float32 original is gone
    assert float(half[0, 0]) == limit and float(half[0, 1]) == -limit  # finite stays finite
    assert np.isnan(half[0, 2].astype(np.float32)) and np.isinf(half[1, 0].astype(np.float32))
    assert half[1, 1] == np.float32(0.1).astype(half.dtype)  # rounded to nearest even, as NumPy's astype
    gather = next(layer for layer in net.layers if layer.op == "Gather")
    assert net.constants[gather.inputs[1]].dtype == np.int64
    assert net.tensors[gather.outputs[0]].dtype == dtype


@pytest.mark.parametrize(("precision", "example", "default"), [("tf32", "mlp", 0.01), ("fp16", "small_cnn", 0.05),
                                                              ("bf16", "small_cnn", 0.2)])
def test_compare_takes_its_default_tolerance_from_the_engines_precision(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], precision: str, example: str, default: float) -> None:
    engine = tmp_path / f"{example}.engine"
    code, _, err = run_cli(capsys, "build", f"{EXAMPLES}/{example}.onnx", "-o", str(engine), "--backend", "cpu",
                           "--precision", precision, "-q")
    assert code == 0, err
    manifest = json.loads((tmp_path / f"{example}.manifest.json").read_text())
    assert manifest["pinned"]["config"]["precision"] == precision
    code, out, _ = run_cli(capsys, "compare", str(engine), f"{EXAMPLES}/{example}.onnx")
    assert code == 0 and f"atol {default:g}, rtol {default:g} (engine precision {precision})" in out, out
    code, out, _ = run_cli(capsys, "compare", str(engine), f"{EXAMPLES}/{example}.onnx", "--atol", "1e-6")
    assert f"atol 1e-06, rtol {default:g} (engine precision {precision})" in out, out


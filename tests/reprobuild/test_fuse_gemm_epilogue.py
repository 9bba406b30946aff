"""The gemm-epilogue fusion: MatMul + bias Add [+ residual Add] [+ activation] (and a Gemm followed by a residual
or an activation) becomes one FusedGemm that computes what the unfused layers compute, bit for bit on the CPU
and within tolerance on every backend against onnxruntime, and keeps their ONNX nodes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from reprobuild.builder import Builder, BuilderConfig
from reprobuild.frontend import network_from_onnx_bytes
from reprobuild.passes import DEFAULT_PASSES, run_passes
from tests.helpers import BACKENDS, make_model
from tests.ops.util import build_and_run, ort_outputs

K, N = 24, 40


def _linear(rng: np.random.Generator, activation: str, residual: bool, bias_shape: tuple[int, ...] = (N,),
            gemm: bool = False, x_shape: tuple[int, ...] = (2, 5, K)) -> onnx.ModelProto:
    w = (rng.standard_normal((K, N)) * K ** -0.5).astype(np.float32)
    inits = {"b": rng.standard_normal(bias_shape).astype(np.float32)}
    if gemm:  # PyTorch's Linear on a 2-D input: Gemm with transB
        inits["w"] = np.ascontiguousarray(w.T)
        nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["c"], name="gemm", transB=1)]
    else:
        inits["w"] = w
        nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="matmul"),
                 helper.make_node("Add", ["m", "b"], ["c"], name="bias")]
    tail = "c"
    if residual:
        nodes.append(helper.make_node("Add", ["r", tail], ["a"], name="add"))
        tail = "a"
    if activation == "Relu":
        nodes.append(helper.make_node("Relu", [tail], ["y"], name="act"))
    elif activation == "SiLU":
        nodes += [helper.make_node("Sigmoid", [tail], ["s"], name="sig"),
                  helper.make_node("Mul", [tail, "s"], ["y"], name="mul")]
    else:
        nodes.append(helper.make_node("Identity", [tail], ["y"], name="act"))
    out = (*x_shape[:-1], N)
    return make_model(nodes, {"x": x_shape, **({"r": out} if residual else {})}, ["y"], inits, 17)


def _feeds(rng: np.random.Generator, model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
            for i in model.graph.input}


CASES = [("", False, (N,), False), ("Relu", False, (1, 1, N), False), ("Relu", True, (N,), False),
         ("SiLU", True, (1, N), False), ("Relu", True, (N,), True), ("SiLU", False, (1, N), True)]


@pytest.mark.parametrize(("activation", "residual", "bias_shape", "gemm"), CASES)
def test_the_epilogue_fuses_into_one_layer_with_every_onnx_node(rng: np.random.Generator, activation: str,
                                                                residual: bool, bias_shape: tuple[int, ...],
                                                                gemm: bool) -> None:
    model = _linear(rng, activation, residual, bias_shape, gemm, (6, K) if gemm else (2, 5, K))
    network, _ = network_from_onnx_bytes(model.SerializeToString())
    fused = run_passes(network, DEFAULT_PASSES)
    assert [layer.op for layer in fused.layers] == ["FusedGemm"]
    layer = fused.layers[0]
    head = ["gemm"] if gemm else ["matmul", "bias"]
    tail = {"Relu": ["act"], "SiLU": ["sig", "mul"], "": ["act"]}[activation]
    assert list(layer.origin) == [*head, *(["add"] if residual else []), *tail]
    assert layer.attr("activation") == activation
    # the weight is (K, N) and the bias (N,), whatever the model wrote
    assert fused.constants[layer.inputs[1]].shape == (K, N) and fused.constants[layer.inputs[2]].shape == (N,)
    assert run_passes(network, DEFAULT_PASSES).layers == fused.layers  # deterministic


@pytest.mark.parametrize(("activation", "residual", "bias_shape", "gemm"), CASES)
def test_on_the_cpu_the_fused_layer_gives_the_unfused_bits(rng: np.random.Generator, activation: str,
                                                           residual: bool, bias_shape: tuple[int, ...],
                                                           gemm: bool) -> None:
    model = _linear(rng, activation, residual, bias_shape, gemm, (6, K) if gemm else (2, 5, K))
    feeds = _feeds(rng, model)
    unfused = [p for p in DEFAULT_PASSES if p != "fuse_gemm_epilogue"]
    fused_out = build_and_run(model, feeds, "cpu")["y"]
    plain_out = build_and_run(model, feeds, "cpu", passes=unfused)["y"]
    assert fused_out.tobytes() == plain_out.tobytes()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("activation", "residual", "bias_shape", "gemm"), CASES)
def test_a_fused_gemm_matches_onnxruntime(rng: np.random.Generator, backend: str, activation: str, residual: bool,
                                          bias_shape: tuple[int, ...], gemm: bool) -> None:
    model = _linear(rng, activation, residual, bias_shape, gemm, (6, K) if gemm else (2, 5, K))
    feeds = _feeds(rng, model)
    np.testing.assert_allclose(build_and_run(model, feeds, backend=backend)["y"], ort_outputs(model, feeds)["y"],
                               rtol=1e-4, atol=1e-4)


def _unfused_ops(model: onnx.ModelProto) -> list[str]:
    network, _ = network_from_onnx_bytes(model.SerializeToString())
    return [layer.op for layer in run_passes(network, DEFAULT_PASSES).layers]


def test_what_is_not_fused(rng: np.random.Generator) -> None:
    w = rng.standard_normal((K, N)).astype(np.float32)
    # a bias that varies along rows is not a per-column bias
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])]
    model = make_model(nodes, {"x": (5, K)}, ["y"], {"w": w, "b": rng.standard_normal((5, 1)).astype(np.float32)})
    assert _unfused_ops(model) == ["MatMul", "Add"]
    # a bias Add that broadcasts the product to a larger shape
    model = make_model(nodes, {"x": (5, K)}, ["y"], {"w": w, "b": rng.standard_normal((3, 1, N)).astype(np.float32)})
    assert _unfused_ops(model) == ["MatMul", "Add"]
    # an activation weight (B not a constant)
    model = make_model(nodes, {"x": (5, K), "w": (K, N)}, ["y"], {"b": rng.standard_normal(N).astype(np.float32)})
    assert _unfused_ops(model) == ["MatMul", "Add"]
    # the product is also a network output
    model = make_model(nodes, {"x": (5, K)}, ["m", "y"], {"w": w, "b": rng.standard_normal(N).astype(np.float32)})
    assert _unfused_ops(model) == ["MatMul", "Add"]
    # a Gemm with nothing after it keeps its own one-launch bias; one with alpha != 1 is left alone
    gemm_inits = {"w": w, "b": rng.standard_normal(N).astype(np.float32)}
    model = make_model([helper.make_node("Gemm", ["x", "w", "b"], ["y"])], {"x": (5, K)}, ["y"], gemm_inits)
    assert _unfused_ops(model) == ["Gemm"]
    model = make_model([helper.make_node("Gemm", ["x", "w", "b"], ["g"], alpha=0.5),
                        helper.make_node("Relu", ["g"], ["y"])], {"x": (5, K)}, ["y"], gemm_inits)
    assert _unfused_ops(model) == ["Gemm", "Relu"]


def test_the_manifest_maps_the_fused_layer_to_its_onnx_nodes(rng: np.random.Generator) -> None:
    model = _linear(rng, "Relu", residual=True, bias_shape=(N,))
    network, _ = network_from_onnx_bytes(model.SerializeToString())
    manifest = Builder().build(network, BuilderConfig(backend="cpu", iterations=1)).manifest
    (layer,) = manifest.pinned.layers
    assert (layer.op, layer.onnx_nodes) == ("FusedGemm", ["matmul", "bias", "add", "act"])
    assert "fuse_gemm_epilogue" in [p.name for p in manifest.pinned.config.passes]


def _conv1d(rng: np.random.Generator, residual: bool, shared_view: bool = False) -> onnx.ModelProto:
    """GPT-2's Conv1D as the dynamo exporter writes it: x (2, 5, K) viewed as (10, K), Gemm with the bias, the
    result viewed back as (2, 5, N), then (optionally) the residual Add."""
    inits = {"w": (rng.standard_normal((K, N)) * K ** -0.5).astype(np.float32),
             "b": rng.standard_normal(N).astype(np.float32),
             "rows": np.array([10, K], np.int64), "back": np.array([2, 5, N], np.int64)}
    nodes = [helper.make_node("Reshape", ["x", "rows"], ["x2"], name="view_in"),
             helper.make_node("Gemm", ["x2", "w", "b"], ["g"], name="addmm"),
             helper.make_node("Reshape", ["g", "back"], ["c"], name="view_out")]
    outputs = ["y"]
    if residual:
        nodes.append(helper.make_node("Add", ["c", "r"], ["y"], name="residual"))
    else:
        nodes.append(helper.make_node("Identity", ["c"], ["y"], name="act"))
    if shared_view:  # something else reads the (10, K) view: it stays, for that reader
        nodes.append(helper.make_node("Relu", ["x2"], ["z"], name="other"))
        outputs.append("z")
    return make_model(nodes, {"x": (2, 5, K), **({"r": (2, 5, N)} if residual else {})}, outputs, inits, 17)


@pytest.mark.parametrize(("residual", "shared_view"), [(True, False), (False, False), (True, True)])
def test_a_gemm_between_views_fuses_around_them_bit_for_bit(rng: np.random.Generator, residual: bool,
                                                            shared_view: bool) -> None:
    model = _conv1d(rng, residual, shared_view)
    network, _ = network_from_onnx_bytes(model.SerializeToString())
    fused = run_passes(network, DEFAULT_PASSES)
    gemm = next(layer for layer in fused.layers if layer.op == "FusedGemm")
    assert gemm.inputs[0] == "x" and fused.tensors[gemm.outputs[0]].shape == (2, 5, N)
    assert len(gemm.inputs) == (4 if residual else 3)
    assert sorted(layer.op for layer in fused.layers) == (["FusedGemm", "Relu", "Reshape"] if shared_view
                                                          else ["FusedGemm"])
    # every ONNX node it computes (the Identity was absorbed into the view before it by eliminate_identities)
    assert list(gemm.origin) == [*([] if shared_view else ["view_in"]), "addmm", "view_out",
                                 "residual" if residual else "act"]
    feeds = _feeds(rng, model)
    unfused = [p for p in DEFAULT_PASSES if p != "fuse_gemm_epilogue"]
    assert build_and_run(model, feeds, "cpu")["y"].tobytes() == \
        build_and_run(model, feeds, "cpu", passes=unfused)["y"].tobytes()
    np.testing.assert_allclose(build_and_run(model, feeds, "cpu")["y"], ort_outputs(model, feeds)["y"], rtol=1e-4,
                               atol=1e-4)

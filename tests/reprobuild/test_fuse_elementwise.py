"""The elementwise fusion: chains of elementwise layers become one FusedElementwise that computes what the unfused
layers compute (bit for bit on the CPU, and against onnxruntime), keeps their ONNX nodes, and is deterministic;
chains whose intermediate tensors are needed elsewhere stay apart."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import pytest
from onnx import helper

from reprobuild.builder import Builder, BuilderConfig
from reprobuild.core.errors import ModelError
from reprobuild.core.logger import Logger, Severity
from reprobuild.engine import Runtime
from reprobuild.frontend import network_from_onnx_bytes
from reprobuild.ir import Network
from reprobuild.passes import DEFAULT_PASSES, PASSES, run_passes
from reprobuild.passes.fuse_elementwise import fuse_elementwise
from tests.helpers import BACKENDS, make_model
from tests.ops.util import ort_outputs

UNFUSED = tuple(p for p in DEFAULT_PASSES if p != "fuse_elementwise")


def _model(nodes: Sequence[onnx.NodeProto], inputs: Mapping[str, tuple[int, ...]], outputs: Sequence[str],
           inits: Mapping[str, np.ndarray] | None = None, dtype: str = "float32") -> onnx.ModelProto:
    return make_model(nodes, inputs, outputs, inits, 17, dtype)


def _network(model: onnx.ModelProto, passes: Sequence[str] = DEFAULT_PASSES) -> Network:
    network, _ = network_from_onnx_bytes(model.SerializeToString())
    return run_passes(network, passes)


def _run(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], passes: Sequence[str] = DEFAULT_PASSES,
         backend: str = "cpu") -> dict[str, np.ndarray]:
    quiet = Logger(Severity.ERROR)
    network, _ = network_from_onnx_bytes(model.SerializeToString(), quiet)
    config = BuilderConfig(backend=backend, warmup=0, iterations=1, runs_per_sample=1, passes=tuple(passes))
    result = Builder(quiet).build(network, config)
    return Runtime(quiet).deserialize_engine(result.engine).create_execution_context().execute(dict(feeds))


def _normal(rng: np.random.Generator, *shape: int, dtype: str = "float32") -> np.ndarray:
    x = rng.standard_normal(shape) * 2.0
    return (x + np.where(x == 0, 0.5, 0.0)).astype(dtype)  # never all zeros


def _silu() -> onnx.ModelProto:
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"], name="sig"), helper.make_node("Mul", ["x", "s"], ["y"],
                                                                                      name="mul")]
    return _model(nodes, {"x": (4, 33)}, ["y"])


def _normalize_chain(rng: np.random.Generator, dtype: str = "float32") -> onnx.ModelProto:
    """(tanh((x - mean) / std)) * gamma, with constants that broadcast along different axes."""
    nodes = [helper.make_node("Sub", ["x", "mean"], ["d"], name="sub"),
             helper.make_node("Div", ["d", "std"], ["n"], name="div"),
             helper.make_node("Tanh", ["n"], ["t"], name="tanh"),
             helper.make_node("Mul", ["gamma", "t"], ["y"], name="mul")]
    inits = {"mean": rng.standard_normal(6).astype(dtype), "std": rng.uniform(0.5, 2.0, (4, 1)).astype(dtype),
             "gamma": rng.uniform(0.5, 1.5, (1, 4, 1)).astype(dtype)}
    return _model(nodes, {"x": (2, 4, 6)}, ["y"], inits, dtype)


def test_silu_becomes_one_layer_with_both_onnx_nodes(rng: np.random.Generator) -> None:
    model = _silu()
    fused = _network(model)
    (layer,) = fused.layers
    assert layer.op == "FusedElementwise"
    assert layer.inputs == ("x",) and layer.outputs == ("y",)
    assert layer.attr("steps") == ("Sigmoid 0", "Mul 0 s0")
    assert layer.origin == ("sig", "mul")
    x = _normal(rng, 4, 33)
    np.testing.assert_allclose(_run(model, {"x": x})["y"], ort_outputs(model, {"x": x})["y"], rtol=1e-5, atol=1e-6)


def test_a_chain_with_broadcast_constants_fuses_and_matches_onnxruntime(rng: np.random.Generator) -> None:
    model = _normalize_chain(rng)
    fused = _network(model)
    (layer,) = fused.layers
    assert layer.op == "FusedElementwise"
    assert layer.inputs == ("x", "mean", "std", "gamma")  # constants stay inputs, in order of first use
    assert all(t in fused.constants for t in layer.inputs[1:])
    assert layer.attr("steps") == ("Sub 0 1", "Div s0 2", "Tanh s1", "Mul 3 s2")
    assert layer.origin == ("sub", "div", "tanh", "mul")
    x = _normal(rng, 2, 4, 6)
    np.testing.assert_allclose(_run(model, {"x": x})["y"], ort_outputs(model, {"x": x})["y"], rtol=1e-5, atol=1e-6)


def test_the_fused_layer_gives_the_bits_of_the_unfused_layers_on_the_cpu(rng: np.random.Generator) -> None:
    model = _normalize_chain(rng)
    assert len(_network(model, UNFUSED).layers) == 4
    x = _normal(rng, 2, 4, 6)
    assert _run(model, {"x": x})["y"].tobytes() == _run(model, {"x": x}, UNFUSED)["y"].tobytes()


def test_an_intermediate_that_is_a_network_output_is_not_fused_away(rng: np.random.Generator) -> None:
    nodes = [helper.make_node("Exp", ["x"], ["e"], name="exp"), helper.make_node("Add", ["e", "x"], ["a"], name="add"),
             helper.make_node("Relu", ["a"], ["y"], name="relu")]
    model = _model(nodes, {"x": (3, 5)}, ["e", "y"])
    fused = _network(model)
    assert [layer.op for layer in fused.layers] == ["Exp", "FusedElementwise"]
    assert fused.layers[1].origin == ("add", "relu") and fused.layers[1].inputs == ("e", "x")
    x = _normal(rng, 3, 5)
    got, want = _run(model, {"x": x}), ort_outputs(model, {"x": x})
    for name in ("e", "y"):
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)


def test_a_tensor_read_outside_the_chain_stops_the_fusion(rng: np.random.Generator) -> None:
    nodes = [helper.make_node("Exp", ["x"], ["e"], name="exp"), helper.make_node("Relu", ["e"], ["r"], name="relu"),
             helper.make_node("Neg", ["e"], ["n"], name="neg")]
    model = _model(nodes, {"x": (3, 5)}, ["r", "n"])
    assert [layer.op for layer in _network(model).layers] == ["Exp", "Relu", "Neg"]
    # read by a non-elementwise layer too: the Exp stays, the two elementwise layers after it fuse
    nodes = [helper.make_node("Exp", ["x"], ["e"], name="exp"), helper.make_node("Neg", ["e"], ["n"], name="neg"),
             helper.make_node("Abs", ["n"], ["y"], name="abs"),
             helper.make_node("ReduceSum", ["e"], ["s"], name="sum", keepdims=1)]
    model = _model(nodes, {"x": (3, 5)}, ["y", "s"])
    fused = _network(model)
    assert [layer.op for layer in fused.layers] == ["Exp", "FusedElementwise", "ReduceSum"]
    assert fused.layers[1].origin == ("neg", "abs")


def test_a_diamond_whose_branches_meet_again_is_one_layer(rng: np.random.Generator) -> None:
    nodes = [helper.make_node("Exp", ["x"], ["e"], name="exp"), helper.make_node("Add", ["e", "b"], ["p"], name="add"),
             helper.make_node("Mul", ["e", "c"], ["q"], name="mul"), helper.make_node("Sub", ["p", "q"], ["y"],
                                                                                     name="sub")]
    model = _model(nodes, {"x": (3, 5), "b": (5,), "c": (3, 1)}, ["y"])
    (layer,) = _network(model).layers
    assert layer.op == "FusedElementwise" and layer.origin == ("exp", "add", "mul", "sub")
    assert layer.attr("steps") == ("Exp 0", "Add s0 1", "Mul s0 2", "Sub s1 s2")
    feeds = {"x": _normal(rng, 3, 5), "b": _normal(rng, 5), "c": _normal(rng, 3, 1)}
    np.testing.assert_allclose(_run(model, feeds)["y"], ort_outputs(model, feeds)["y"], rtol=1e-5, atol=1e-6)


def test_activations_with_attributes_are_written_into_the_steps(rng: np.random.Generator) -> None:
    nodes = [helper.make_node("LeakyRelu", ["x"], ["a"], name="leaky", alpha=0.1),
             helper.make_node("Clip", ["a", "lo", "hi"], ["c"], name="clip"),
             helper.make_node("HardSigmoid", ["c"], ["h"], name="hsig", alpha=0.3, beta=0.4),
             helper.make_node("Elu", ["h"], ["e"], name="elu", alpha=0.5),
             helper.make_node("Max", ["e", "x"], ["y"], name="max")]
    model = _model(nodes, {"x": (2, 17)}, ["y"], {"lo": np.float32(-1.0), "hi": np.float32(0.75)})
    (layer,) = _network(model).layers
    assert layer.inputs == ("x",)
    assert layer.attr("steps") == (
        f"LeakyRelu 0 alpha={float(np.float32(0.1))!r}",
        'Clip s0 max=0.75 max_from="value" min=-1.0 min_from="value"',
        f"HardSigmoid s1 alpha={float(np.float32(0.3))!r} beta={float(np.float32(0.4))!r}",
        "Elu s2 alpha=0.5", "Max s3 0")
    x = _normal(rng, 2, 17)
    np.testing.assert_allclose(_run(model, {"x": x})["y"], ort_outputs(model, {"x": x})["y"], rtol=1e-5, atol=1e-6)
    assert _run(model, {"x": x})["y"].tobytes() == _run(model, {"x": x}, UNFUSED)["y"].tobytes()


def test_a_float16_chain_fuses_and_keeps_the_unfused_bits(rng: np.random.Generator) -> None:
    nodes = [helper.make_node("Mul", ["x", "w"], ["m"], name="mul"), helper.make_node("Add", ["m", "b"], ["a"],
                                                                                      name="add"),
             helper.make_node("Sigmoid", ["a"], ["s"], name="sig"), helper.make_node("Mul", ["a", "s"], ["y"],
                                                                                     name="silu")]
    inits = {"w": rng.uniform(0.5, 1.5, 8).astype(np.float16), "b": rng.standard_normal(8).astype(np.float16)}
    model = _model(nodes, {"x": (3, 8)}, ["y"], inits, "float16")
    (layer,) = _network(model).layers
    assert layer.op == "FusedElementwise" and layer.origin == ("mul", "add", "sig", "silu")
    x = _normal(rng, 3, 8, dtype="float16")
    got = _run(model, {"x": x})["y"]
    assert got.dtype == np.float16
    assert got.tobytes() == _run(model, {"x": x}, UNFUSED)["y"].tobytes()
    # onnxruntime's float16 kernels round differently between the steps: a float16 tolerance
    np.testing.assert_allclose(got.astype(np.float32), ort_outputs(model, {"x": x})["y"].astype(np.float32),
                               rtol=2e-3, atol=2e-3)


def test_mixed_dtypes_and_single_layers_are_left_alone() -> None:
    nodes = [helper.make_node("Cast", ["x"], ["h"], to=onnx.TensorProto.FLOAT16),
             helper.make_node("Relu", ["h"], ["r"]), helper.make_node("Cast", ["r"], ["y"], to=onnx.TensorProto.FLOAT)]
    assert [layer.op for layer in _network(_model(nodes, {"x": (4,)}, ["y"])).layers] == ["Cast", "Relu", "Cast"]
    nodes = [helper.make_node("Max", ["x", "x", "x"], ["m"]), helper.make_node("Relu", ["m"], ["y"])]
    assert [layer.op for layer in _network(_model(nodes, {"x": (4,)}, ["y"])).layers] == ["Max", "Relu"]


def test_the_pass_is_deterministic_and_idempotent(rng: np.random.Generator) -> None:
    network, _ = network_from_onnx_bytes(_normalize_chain(rng).SerializeToString())
    once, again = fuse_elementwise(network), fuse_elementwise(network)
    assert once.layers == again.layers and [layer.origin for layer in once.layers] == [
        layer.origin for layer in again.layers]
    assert once.structural_hash == again.structural_hash
    assert fuse_elementwise(once).layers == once.layers
    assert "fuse_elementwise" in DEFAULT_PASSES and PASSES["fuse_elementwise"].version >= 1


def test_the_manifest_maps_the_fused_layer_to_its_onnx_nodes() -> None:
    network, _ = network_from_onnx_bytes(_silu().SerializeToString())
    manifest = Builder(Logger(Severity.ERROR)).build(network, BuilderConfig(backend="cpu", iterations=1)).manifest
    (layer,) = manifest.pinned.layers
    assert (layer.op, layer.onnx_nodes) == ("FusedElementwise", ["sig", "mul"])


def test_the_onnx_frontend_refuses_the_internal_op() -> None:
    node = helper.make_node("FusedElementwise", ["x"], ["y"], steps=["Relu 0"])
    model = _model([node], {"x": (4,)}, [], None)
    model.graph.output.extend([helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4])])
    with pytest.raises(ModelError, match="FusedElementwise"):
        network_from_onnx_bytes(model.SerializeToString())


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_chains_match_onnxruntime_on_each_backend(rng: np.random.Generator, backend: str) -> None:
    model = _normalize_chain(rng)
    x = _normal(rng, 2, 4, 6)
    np.testing.assert_allclose(_run(model, {"x": x}, backend=backend)["y"], ort_outputs(model, {"x": x})["y"],
                               rtol=1e-5, atol=1e-6)

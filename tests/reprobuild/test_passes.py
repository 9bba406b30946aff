"""Graph passes: each a small module with a version; the manifest records them and each layer's ONNX nodes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from reprobuild.builder import Builder, BuilderConfig
from reprobuild.frontend import network_from_onnx_bytes
from reprobuild.passes import DEFAULT_PASSES, PASSES, run_passes
from reprobuild.passes.pattern import Const, GraphIndex, Op, Var, match
from tests.ops.util import build_and_run, ort_outputs


def _model(nodes: list[onnx.NodeProto], inputs: dict[str, tuple[int, ...]], inits: dict[str, np.ndarray],
           output: str = "y", opset: int = 17) -> onnx.ModelProto:
    from tests.helpers import make_model

    return make_model(nodes, inputs, [output], inits, opset)


def _bn_params(rng: np.random.Generator, c: int) -> dict[str, np.ndarray]:
    return {"s": rng.uniform(0.5, 1.5, c).astype(np.float32), "b": rng.standard_normal(c).astype(np.float32),
            "m": rng.standard_normal(c).astype(np.float32), "v": rng.uniform(0.5, 1.5, c).astype(np.float32)}


def test_every_pass_has_a_version_and_the_defaults_exist() -> None:
    assert set(DEFAULT_PASSES) <= set(PASSES)
    assert all(p.version >= 1 and p.summary for p in PASSES.values())


def test_batchnorm_is_folded_into_the_conv_before_it(rng: np.random.Generator) -> None:
    inits = {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "bias": rng.standard_normal(4)
             .astype(np.float32), **_bn_params(rng, 4)}
    nodes = [helper.make_node("Conv", ["x", "w", "bias"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"], name="bn", epsilon=1e-3)]
    model = _model(nodes, {"x": (2, 3, 8, 8)}, inits)
    network, _ = network_from_onnx_bytes(model.SerializeToString())
    folded = run_passes(network, DEFAULT_PASSES)
    assert [layer.op for layer in folded.layers] == ["Conv"]
    assert folded.layers[0].origin == ("conv", "bn") and folded.layers[0].outputs == ("y",)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(build_and_run(model, {"x": x})["y"], ort_outputs(model, {"x": x})["y"],
                               rtol=1e-4, atol=1e-5)
    manifest = Builder().build(network, BuilderConfig(backend="cpu", iterations=1)).manifest
    assert manifest.pinned.layers[0].onnx_nodes == ["conv", "bn"]
    assert [(p.name, p.version) for p in manifest.pinned.config.passes] == [(n, PASSES[n].version)
                                                                           for n in DEFAULT_PASSES]


@pytest.mark.parametrize("trans_b", [0, 1])
def test_batchnorm_is_folded_into_a_gemm(rng: np.random.Generator, trans_b: int) -> None:
    w = rng.standard_normal((5, 6) if trans_b else (6, 5)).astype(np.float32)
    inits = {"w": w, "c0": rng.standard_normal(5).astype(np.float32), **_bn_params(rng, 5)}
    nodes = [helper.make_node("Gemm", ["x", "w", "c0"], ["g"], transB=trans_b, beta=0.5),
             helper.make_node("BatchNormalization", ["g", "s", "b", "m", "v"], ["y"])]
    model = _model(nodes, {"x": (3, 6)}, inits)
    network, _ = network_from_onnx_bytes(model.SerializeToString())
    assert [layer.op for layer in run_passes(network, DEFAULT_PASSES).layers] == ["Gemm"]
    x = rng.standard_normal((3, 6)).astype(np.float32)
    np.testing.assert_allclose(build_and_run(model, {"x": x})["y"], ort_outputs(model, {"x": x})["y"],
                               rtol=1e-4, atol=1e-5)


def test_batchnorm_stays_when_the_conv_output_is_read_elsewhere(rng: np.random.Generator) -> None:
    inits = {"w": rng.standard_normal((2, 2, 1, 1)).astype(np.float32), **_bn_params(rng, 2)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["n"]),
             helper.make_node("Add", ["n", "c"], ["y"])]
    network, _ = network_from_onnx_bytes(_model(nodes, {"x": (1, 2, 4, 4)}, inits).SerializeToString())
    assert [layer.op for layer in run_passes(network, DEFAULT_PASSES).layers] == ["Conv", "BatchNormalization", "Add"]


def test_the_matcher_binds_variables_consistently_and_tries_both_operand_orders() -> None:
    nodes = [helper.make_node("Mul", ["x", "half"], ["h"]), helper.make_node("Add", ["one", "h"], ["y"])]
    model = _model(nodes, {"x": (3,)}, {"half": np.float32(0.5), "one": np.float32(1.0)})
    network, _ = network_from_onnx_bytes(model.SerializeToString())
    index = GraphIndex(network)
    found = match(Op("Add", Op("Mul", Var("x"), Const(0.5)), Const(1.0, name="c")), "y", index)
    assert found is not None and found.vars == {"x": "x"} and found.const_value("c") == 1.0
    assert match(Op("Add", Op("Mul", Var("x"), Var("x")), Const(1.0)), "y", index) is None  # x bound twice
    assert match(Op("Add", Op("Mul", Var("x"), Const(0.25)), Const(1.0)), "y", index) is None


def test_a_match_whose_inner_tensor_is_read_elsewhere_is_refused() -> None:
    nodes = [helper.make_node("Mul", ["x", "half"], ["h"]), helper.make_node("Add", ["h", "one"], ["a"]),
             helper.make_node("Add", ["a", "h"], ["y"])]
    model = _model(nodes, {"x": (3,)}, {"half": np.float32(0.5), "one": np.float32(1.0)})
    network, _ = network_from_onnx_bytes(model.SerializeToString())
    assert match(Op("Add", Op("Mul", Var("x"), Const(0.5)), Const(1.0)), "a", GraphIndex(network)) is None


def _gelu_nodes(x: str = "x") -> list[onnx.NodeProto]:
    """Gelu as exporters without a Gelu op write it: x * 0.5 * (1 + erf(x / sqrt(2)))."""
    return [helper.make_node("Div", [x, "sqrt2"], ["d"], name="div"),
            helper.make_node("Erf", ["d"], ["e"], name="erf"),
            helper.make_node("Add", ["e", "one"], ["a"], name="add"),
            helper.make_node("Mul", [x, "a"], ["m"], name="mul"),
            helper.make_node("Mul", ["m", "half"], ["y"], name="half_mul")]


def test_gelu_written_out_becomes_one_layer_with_every_node_recorded(rng: np.random.Generator) -> None:
    consts = {"sqrt2": np.float32(np.sqrt(2.0)), "one": np.float32(1.0), "half": np.float32(0.5)}
    model = _model(_gelu_nodes(), {"x": (4, 16)}, consts)
    network, _ = network_from_onnx_bytes(model.SerializeToString())
    fused = run_passes(network, DEFAULT_PASSES)
    assert [(layer.op, layer.attrs) for layer in fused.layers] == [("Gelu", (("approximate", "none"),))]
    assert set(fused.layers[0].origin) == {"div", "erf", "add", "mul", "half_mul"}
    x = rng.standard_normal((4, 16)).astype(np.float32)
    np.testing.assert_allclose(build_and_run(model, {"x": x})["y"], ort_outputs(model, {"x": x})["y"],
                               rtol=1e-5, atol=1e-6)


def test_layer_normalization_written_out_becomes_one_layer(rng: np.random.Generator) -> None:
    nodes = [helper.make_node("ReduceMean", ["x"], ["mean"], axes=[-1]),
             helper.make_node("Sub", ["x", "mean"], ["d"]), helper.make_node("Pow", ["d", "two"], ["sq"]),
             helper.make_node("ReduceMean", ["sq"], ["var"], axes=[-1]),
             helper.make_node("Add", ["var", "eps"], ["ve"]),
             helper.make_node("Sqrt", ["ve"], ["std"]), helper.make_node("Div", ["d", "std"], ["n"]),
             helper.make_node("Mul", ["n", "gamma"], ["s"]), helper.make_node("Add", ["s", "beta"], ["y"])]
    consts = {"two": np.float32(2.0), "eps": np.float32(1e-5), "gamma": rng.uniform(0.5, 1.5, 8).astype(np.float32),
              "beta": rng.standard_normal(8).astype(np.float32)}
    model = _model(nodes, {"x": (3, 5, 8)}, consts)
    network, _ = network_from_onnx_bytes(model.SerializeToString())
    fused = run_passes(network, DEFAULT_PASSES)
    assert [layer.op for layer in fused.layers] == ["LayerNormalization"]
    assert dict(fused.layers[0].attrs) == {"axis": 2, "epsilon": pytest.approx(1e-5), "stash_type": 1}
    assert len(fused.layers[0].origin) == 9
    x = rng.standard_normal((3, 5, 8)).astype(np.float32)
    np.testing.assert_allclose(build_and_run(model, {"x": x})["y"], ort_outputs(model, {"x": x})["y"],
                               rtol=1e-4, atol=1e-5)


def test_a_layer_normalization_over_a_leading_axis_is_left_alone(rng: np.random.Generator) -> None:
    nodes = [helper.make_node("ReduceMean", ["x"], ["mean"], axes=[0]),
             helper.make_node("Sub", ["x", "mean"], ["d"]), helper.make_node("Pow", ["d", "two"], ["sq"]),
             helper.make_node("ReduceMean", ["sq"], ["var"], axes=[0]), helper.make_node("Add", ["var", "eps"], ["ve"]),
             helper.make_node("Sqrt", ["ve"], ["std"]), helper.make_node("Div", ["d", "std"], ["n"]),
             helper.make_node("Mul", ["n", "gamma"], ["s"]), helper.make_node("Add", ["s", "beta"], ["y"])]
    consts = {"two": np.float32(2.0), "eps": np.float32(1e-5), "gamma": np.ones(8, np.float32),
              "beta": np.zeros(8, np.float32)}
    network, _ = network_from_onnx_bytes(_model(nodes, {"x": (3, 8)}, consts).SerializeToString())
    assert "LayerNormalization" not in {layer.op for layer in run_passes(network, DEFAULT_PASSES).layers}

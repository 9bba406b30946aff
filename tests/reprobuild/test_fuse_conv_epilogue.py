"""The conv-epilogue fusion: Conv [+ residual Add] [+ activation] becomes one FusedConv that computes what the
unfused layers compute (checked against onnxruntime on each backend), and keeps their ONNX nodes."""

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


def _block(rng: np.random.Generator, activation: str, residual: bool, bias: bool = True,
           group: int = 1, kernel: int = 3) -> onnx.ModelProto:
    c = 8
    inits = {"w": (rng.standard_normal((c, c // group, kernel, kernel)) * 0.3).astype(np.float32)}
    conv_inputs = ["x", "w"]
    if bias:
        inits["b"] = rng.standard_normal(c).astype(np.float32)
        conv_inputs.append("b")
    pad = kernel // 2
    nodes = [helper.make_node("Conv", conv_inputs, ["c"], name="conv", pads=[pad] * 4, group=group)]
    tail = "c"
    if residual:
        nodes.append(helper.make_node("Add", ["r", tail], ["a"], name="add"))
        tail = "a"
    if activation == "Relu":
        nodes.append(helper.make_node("Relu", [tail], ["y"], name="act"))
    elif activation == "Clip":
        inits["lo"], inits["hi"] = np.float32(0.0), np.float32(6.0)
        nodes.append(helper.make_node("Clip", [tail, "lo", "hi"], ["y"], name="act"))
    elif activation == "SiLU":
        nodes += [helper.make_node("Sigmoid", [tail], ["s"], name="sig"),
                  helper.make_node("Mul", [tail, "s"], ["y"], name="mul")]
    else:
        nodes.append(helper.make_node("Identity", [tail], ["y"], name="act"))
    inputs = {"x": (2, c, 9, 9), **({"r": (2, c, 9, 9)} if residual else {})}
    return make_model(nodes, inputs, ["y"], inits, 17)


CASES = [("Relu", True, True), ("Relu", False, True), ("Clip", False, True), ("SiLU", True, False),
         ("", True, True)]


@pytest.mark.parametrize(("activation", "residual", "bias"), CASES)
def test_the_epilogue_fuses_into_one_layer_with_every_onnx_node(rng: np.random.Generator, activation: str,
                                                                residual: bool, bias: bool) -> None:
    model = _block(rng, activation, residual, bias)
    network, _ = network_from_onnx_bytes(model.SerializeToString())
    fused = run_passes(network, DEFAULT_PASSES)
    assert [layer.op for layer in fused.layers] == ["FusedConv"]
    layer = fused.layers[0]
    # (an Identity is removed by eliminate_identities; its node joins the layer that produced its input)
    tail = {"Relu": ["act"], "Clip": ["act"], "SiLU": ["sig", "mul"], "": ["act"]}[activation]
    expected = ["conv", *(["add"] if residual else []), *tail]
    assert list(layer.origin) == expected
    assert layer.attr("activation") == activation
    assert run_passes(network, DEFAULT_PASSES).layers == fused.layers  # deterministic


def test_no_fusion_when_the_conv_output_is_read_twice(rng: np.random.Generator) -> None:
    inits = {"w": rng.standard_normal((4, 4, 1, 1)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["y"]),
             helper.make_node("Add", ["c", "y"], ["z"])]
    model = make_model(nodes, {"x": (1, 4, 5, 5)}, ["z"], inits, 17)
    network, _ = network_from_onnx_bytes(model.SerializeToString())
    # (the Relu and Add after it are elementwise, and fuse_elementwise makes one layer of them)
    assert [layer.op for layer in run_passes(network, DEFAULT_PASSES).layers] == ["Conv", "FusedElementwise"]


def test_two_convolutions_summed_by_one_add_fuse_once_and_every_block_in_one_pass(rng: np.random.Generator) -> None:
    """A ResNet downsampling block: conv_a + conv_b -> Relu. The first convolution in layer order takes the Add
    (the second becomes its residual input) and the Relu; the second stays a Conv. Two such blocks in a row both
    fuse, however the pass batches its rewrites."""
    inits = {f"w{i}": (rng.standard_normal((4, 4, 1, 1)) * 0.3).astype(np.float32) for i in range(4)}
    nodes = []
    x = "x"
    for block in range(2):
        a, b = f"w{2 * block}", f"w{2 * block + 1}"
        nodes += [helper.make_node("Conv", [x, a], [f"ca{block}"], name=f"conv_a{block}"),
                  helper.make_node("Conv", [x, b], [f"cb{block}"], name=f"conv_b{block}"),
                  helper.make_node("Add", [f"ca{block}", f"cb{block}"], [f"s{block}"], name=f"add{block}"),
                  helper.make_node("Relu", [f"s{block}"], [f"y{block}"], name=f"relu{block}")]
        x = f"y{block}"
    model = make_model(nodes, {"x": (1, 4, 5, 5)}, [x], inits, 17)
    network, _ = network_from_onnx_bytes(model.SerializeToString())
    fused = run_passes(network, DEFAULT_PASSES)
    assert [(layer.name, layer.op) for layer in fused.layers] == [
        ("conv_b0", "Conv"), ("conv_a0", "FusedConv"), ("conv_b1", "Conv"), ("conv_a1", "FusedConv")]
    assert fused.layers[1].origin == ("conv_a0", "add0", "relu0")
    assert fused.layers[1].inputs[3] == "cb0" and fused.layers[1].attr("activation") == "Relu"
    feeds = {"x": rng.standard_normal((1, 4, 5, 5)).astype(np.float32)}
    np.testing.assert_allclose(build_and_run(model, feeds, "cpu")[x], ort_outputs(model, feeds)[x],
                               rtol=1e-5, atol=1e-5)


def test_no_fusion_when_an_intermediate_is_a_network_output(rng: np.random.Generator) -> None:
    inits = {"w": rng.standard_normal((4, 4, 1, 1)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["y"])]
    model = make_model(nodes, {"x": (1, 4, 5, 5)}, ["c", "y"], inits, 17)
    network, _ = network_from_onnx_bytes(model.SerializeToString())
    assert [layer.op for layer in run_passes(network, DEFAULT_PASSES).layers] == ["Conv", "Relu"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("activation", "residual", "bias"), CASES)
def test_a_fused_conv_matches_onnxruntime(rng: np.random.Generator, backend: str, activation: str, residual: bool,
                                          bias: bool) -> None:
    model = _block(rng, activation, residual, bias)
    feeds = {"x": rng.standard_normal((2, 8, 9, 9)).astype(np.float32)}
    if residual:
        feeds["r"] = rng.standard_normal((2, 8, 9, 9)).astype(np.float32)
    np.testing.assert_allclose(build_and_run(model, feeds, backend=backend)["y"], ort_outputs(model, feeds)["y"],
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_grouped_fused_conv_matches_onnxruntime(rng: np.random.Generator, backend: str) -> None:
    model = _block(rng, "Clip", residual=False, group=8)  # depthwise, as in MobileNet
    feeds = {"x": rng.standard_normal((2, 8, 9, 9)).astype(np.float32)}
    np.testing.assert_allclose(build_and_run(model, feeds, backend=backend)["y"], ort_outputs(model, feeds)["y"],
                               rtol=1e-4, atol=1e-4)


def test_the_manifest_maps_the_fused_layer_to_its_onnx_nodes(rng: np.random.Generator) -> None:
    model = _block(rng, "Relu", residual=True)
    network, _ = network_from_onnx_bytes(model.SerializeToString())
    manifest = Builder().build(network, BuilderConfig(backend="cpu", iterations=1)).manifest
    (layer,) = manifest.pinned.layers
    assert (layer.op, layer.onnx_nodes) == ("FusedConv", ["conv", "add", "act"])
    assert "fuse_conv_epilogue" in [p.name for p in manifest.pinned.config.passes]

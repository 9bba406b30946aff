"""fuse_roll: torch.roll as exported (Concat of two Slices of one tensor) becomes one Gather with constant indices
that moves the same bits, and what is not a cyclic shift stays as it was."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from reprobuild.frontend import network_from_onnx_bytes
from reprobuild.passes import DEFAULT_PASSES, run_passes
from tests.helpers import BACKENDS, make_model, ort_run
from tests.ops.util import build_and_run

SHAPE = (2, 6, 5, 3)


def _roll_model(axis: int, shift: int, *, slice_axes: bool = True, swap: bool = False,
                step: int = 1) -> onnx.ModelProto:
    """x rolled by ``shift`` along ``axis`` as torch exports it: Concat([x[shift:], x[:shift]]) (``swap`` writes
    the halves the other way round, which is no roll of that shift)."""
    n = SHAPE[axis]
    inits = {"s0": np.array([shift], np.int64), "e0": np.array([n], np.int64), "s1": np.array([0], np.int64),
             "e1": np.array([shift], np.int64), "ax": np.array([axis], np.int64), "st": np.array([step], np.int64)}
    extra = ["ax", "st"] if slice_axes else []
    nodes = [helper.make_node("Slice", ["x", "s0", "e0", *extra], ["head"], name="head"),
             helper.make_node("Slice", ["x", "s1", "e1", *extra], ["tail"], name="tail"),
             helper.make_node("Concat", ["tail", "head"] if swap else ["head", "tail"], ["r"], axis=axis,
                              name="cat"),
             helper.make_node("Relu", ["r"], ["y"], name="relu")]
    return make_model(nodes, {"x": SHAPE}, ["y"], inits, opset=18)


@pytest.mark.parametrize(("axis", "shift"), [(1, 2), (1, 5), (2, 1), (3, 2), (0, 1)])
def test_a_roll_becomes_one_gather_with_the_same_bits(rng: np.random.Generator, axis: int, shift: int) -> None:
    model = _roll_model(axis, shift)
    network = run_passes(network_from_onnx_bytes(model.SerializeToString())[0], DEFAULT_PASSES)
    assert [layer.op for layer in network.layers] == ["Gather", "Relu"]
    gather = network.layers[0]
    assert gather.attr("axis") == axis and list(gather.origin) == ["head", "tail", "cat"]
    n = SHAPE[axis]
    assert network.constants[gather.inputs[1]].tolist() == [*range(shift, n), *range(shift)]
    x = rng.standard_normal(SHAPE).astype(np.float32)
    unfused = [p for p in DEFAULT_PASSES if p != "fuse_roll"]
    fused_out = build_and_run(model, {"x": x}, "cpu")["y"]
    assert fused_out.tobytes() == build_and_run(model, {"x": x}, "cpu", passes=unfused)["y"].tobytes()
    assert fused_out.tobytes() == np.maximum(np.roll(x, -shift, axis=axis), 0).tobytes()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_rolled_network_matches_onnxruntime(rng: np.random.Generator, backend: str) -> None:
    model = _roll_model(2, 3)
    x = rng.standard_normal(SHAPE).astype(np.float32)
    (want,) = ort_run(model, {"x": x})
    np.testing.assert_array_equal(build_and_run(model, {"x": x}, backend)["y"], want)


def test_what_is_not_a_roll_stays() -> None:
    def ops(model: onnx.ModelProto) -> list[str]:
        network = network_from_onnx_bytes(model.SerializeToString())[0]
        return sorted(layer.op for layer in run_passes(network, DEFAULT_PASSES).layers)

    assert ops(_roll_model(1, 2, swap=True)) == ["Concat", "Relu", "Slice", "Slice"]  # x[:2] ++ x[2:]: no shift
    assert ops(_roll_model(1, 2, step=2)) == ["Concat", "Relu", "Slice", "Slice"]  # strided halves

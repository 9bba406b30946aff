"""Inputs whose values decide shapes (TensorRT's shape-input values): pinned at build time, checked at run time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from reprobuild.builder import Builder, BuilderConfig
from reprobuild.core.errors import InputError, UsageError
from reprobuild.engine import Runtime
from reprobuild.frontend import network_from_onnx_bytes
from reprobuild.ops import StaticInputError
from tests.helpers import run_cli


def _reshape_model() -> onnx.ModelProto:
    nodes = [helper.make_node("Reshape", ["x", "s"], ["r"]), helper.make_node("Relu", ["r"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6]),
                                           helper.make_tensor_value_info("s", TensorProto.INT64, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_an_unpinned_shape_input_is_a_typed_error_naming_the_input() -> None:
    with pytest.raises(StaticInputError, match=r"Reshape.*target shape.*network input\(s\) 's'.*--input-value s="
                       ) as err:
        network_from_onnx_bytes(_reshape_model().SerializeToString())
    assert err.value.inputs == ("s",)


def test_a_pinned_input_is_checked_at_run_time_and_may_be_left_out(rng: np.random.Generator) -> None:
    network, _ = network_from_onnx_bytes(_reshape_model().SerializeToString(),
                                         input_values={"s": np.array([3, 4])})
    assert network.pinned_inputs == ("s",) and network.outputs[0].shape == (3, 4)
    result = Builder().build(network, BuilderConfig(backend="cpu", iterations=1))
    assert [p.name for p in result.manifest.pinned.pinned_inputs] == ["s"]
    engine = Runtime().deserialize_engine(result.engine)
    assert [(b.name, b.value is not None) for b in engine.inputs] == [("x", False), ("s", True)]
    x = rng.standard_normal((2, 6)).astype(np.float32)
    context = engine.create_execution_context()
    expected = np.maximum(x.reshape(3, 4), 0)
    np.testing.assert_array_equal(context.execute({"x": x})["y"], expected)
    np.testing.assert_array_equal(context.execute({"x": x, "s": np.array([3, 4], dtype=np.int64)})["y"], expected)
    with pytest.raises(InputError, match=r"'s' was pinned to \[3 4\].*given \[4 3\].*--input-value s="):
        context.execute({"x": x, "s": np.array([4, 3], dtype=np.int64)})


def test_pinned_values_must_fit_the_declared_input() -> None:
    data = _reshape_model().SerializeToString()
    with pytest.raises(UsageError, match="shape \\[3\\], but the model declares \\[2\\]"):
        network_from_onnx_bytes(data, input_values={"s": np.array([1, 2, 6])})
    with pytest.raises(UsageError, match="do not fit the input's dtype int64"):
        network_from_onnx_bytes(data, input_values={"s": np.array([3.5, 4.0])})
    with pytest.raises(UsageError, match="'t', which is not a network input"):
        network_from_onnx_bytes(data, input_values={"t": np.array([3, 4])})


def test_cli_input_value_pins_and_run_uses_the_pinned_value(tmp_path: Path, capsys: Any) -> None:
    model = tmp_path / "r.onnx"
    onnx.save(_reshape_model(), model)
    engine = tmp_path / "r.engine"
    code, _, err = run_cli(capsys, "build", str(model), "-o", str(engine), "--backend", "cpu")
    assert code == 3 and "--input-value s=" in err
    code, out, err = run_cli(capsys, "build", str(model), "-o", str(engine), "--backend", "cpu", "--input-value",
                             "s=3,4")
    assert code == 0, err
    code, out, err = run_cli(capsys, "run", str(engine), "--seed", "0")
    assert code == 0 and "3x4" in out, err
    code, out, _ = run_cli(capsys, "inspect", str(engine))
    assert code == 0 and "input (pinned)" in out

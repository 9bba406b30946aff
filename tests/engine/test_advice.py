"""shape_advice: what to do about an input of another shape, by whether the model's dimension is static."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from reprobuild.builder import Builder, BuilderConfig
from reprobuild.core.errors import InputError
from reprobuild.engine import Engine, Runtime
from reprobuild.engine.advice import shape_advice
from reprobuild.frontend import network_from_onnx_bytes


def test_a_dynamic_dimension_gets_a_concrete_rebuild_command() -> None:
    text = shape_advice("input", ["N", 3, 32, 32], (1, 3, 32, 32), (8, 3, 32, 32))
    assert "declares axis 0 of 'input' dynamic ('N' at axis 0)" in text
    assert "--input-shape input=8x3x32x32" in text
    assert "static" not in text


def test_an_unnamed_dynamic_dimension_is_shown_as_a_question_mark() -> None:
    assert "('?' at axis 1)" in shape_advice("x", [4, None], (4, 5), (4, 6))


def test_a_static_dimension_is_said_to_need_another_export_not_a_rebuild() -> None:
    text = shape_advice("input", ["N", 3, 32, 32], (1, 3, 32, 32), (1, 3, 64, 64))
    assert "declares axes 2, 3 of 'input' static (32 at axis 2, 32 at axis 3)" in text
    assert "no rebuild changes it" in text and "export the model with a dynamic dimension" in text
    assert "give an array of shape 1x3x32x32" in text


def test_static_and_dynamic_axes_differing_together_need_the_export() -> None:
    text = shape_advice("input", ["N", 3, 32, 32], (1, 3, 32, 32), (8, 3, 64, 32))
    assert "axis 2 of 'input' static (32 at axis 2)" in text and "no rebuild changes it" in text


def test_unknown_declared_dims_name_both_cases_with_the_concrete_option() -> None:
    text = shape_advice("input", None, (8, 64), (3, 64))
    assert "computes only 8x64" in text and "If the model declares axis 0 dynamic" in text
    assert "--input-shape input=3x64" in text and "static, export the model with a dynamic dimension" in text


def test_another_rank_is_a_reshape_whatever_the_model_declares() -> None:
    text = shape_advice("image", ["N", 3, 32, 32], (1, 3, 32, 32), (3, 32, 32))
    assert "rank-4 array for 'image' and this one has rank 3; reshape it to 1x3x32x32" in text
    assert "array[None]" in text and "--input-shape" not in text
    assert "array[None]" not in shape_advice("x", None, (2, 5), (5,))


def test_a_declared_shape_of_another_rank_counts_as_unknown() -> None:
    assert "If the model declares axis 0 dynamic" in shape_advice("x", ["N"], (2, 5), (3, 5))


def test_the_same_shape_needs_nothing() -> None:
    assert "nothing needs to change" in shape_advice("x", None, (2, 5), (2, 5))


def _relu_engine(declared: list[int | str], shape: tuple[int, ...] | None) -> Engine:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, declared)],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, declared)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    network, info = network_from_onnx_bytes(model.SerializeToString(), None, {"x": shape} if shape else None)
    assert info.declared_inputs == {"x": tuple(declared)}
    built = Builder().build(network, BuilderConfig(backend="cpu", iterations=1, warmup=0))
    engine: Engine = Runtime().deserialize_engine(built.engine)
    return engine


def test_the_engine_records_the_declared_shape_and_a_run_gets_the_definite_advice() -> None:
    """The finding: a wrong-shaped run advised --input-shape even where the model's dimension is static (and the
    rebuild then failed). The engine now records the declared shape, so each case gets its own advice."""
    dynamic = _relu_engine(["N", 4], (2, 4))
    assert dynamic.inputs[0].declared == ("N", 4) and dynamic.header.declared_inputs == {"x": ["N", 4]}
    with pytest.raises(InputError) as error:
        dynamic.create_execution_context().execute({"x": np.ones((3, 4), np.float32)})
    assert "declares axis 0 of 'x' dynamic ('N' at axis 0)" in str(error.value)
    assert "--input-shape x=3x4" in str(error.value)

    static = _relu_engine([2, 4], None)
    with pytest.raises(InputError) as error:
        static.create_execution_context().execute({"x": np.ones((3, 4), np.float32)})
    assert "declares axis 0 of 'x' static (2 at axis 0)" in str(error.value)
    assert "no rebuild changes it" in str(error.value)

"""shape_advice: what to do about an input of another shape, by whether the model's dimension is static."""

from __future__ import annotations

from reprobuild.engine.advice import shape_advice


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

"""Det (op_linalg) against onnxruntime on fresh random matrices; float64 and float16, which onnxruntime does not
run, against NumPy's float64 determinant."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper

from reprobuild.core.errors import ReprobuildError
from tests.ops.util import BACKENDS, build_and_run, check_op, node_model


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("shape", "dtype"), [((3, 3), np.float32), ((2, 4, 5, 5), np.float32),
                                              ((3, 2, 2), np.float64), ((1, 1), np.float32)])
def test_det(backend: str, rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> None:
    x = rng.standard_normal(shape).astype(dtype)
    expected = {"y": np.asarray(np.linalg.det(x))} if dtype == np.float64 else None
    check_op("Det", {"x": x}, backend=backend, expected=expected, opset=22, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_det_of_singular_and_float16_matrices(backend: str, rng: np.random.Generator) -> None:
    x = rng.standard_normal((4, 3, 3))
    x[1, 2] = x[1, 0] * 2  # singular: a row twice another
    x16 = x.astype(np.float16)
    got = build_and_run(node_model("Det", {"x": x16}), {"x": x16}, backend)["y"]
    assert got.dtype == np.float16 and got.shape == (4,)
    np.testing.assert_allclose(got.astype(np.float64), np.linalg.det(x16.astype(np.float64)), rtol=1e-3, atol=1e-3)
    assert abs(float(got[1])) < 1e-2


def test_non_square_matrices_are_a_typed_error(rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    model = node_model("Det", {"x": x})
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, [2]))
    with pytest.raises(ReprobuildError, match=r"Det.*square"):
        build_and_run(model, {"x": x})

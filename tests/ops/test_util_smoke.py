"""The op-test helpers themselves, on ops that exist from the start."""

from __future__ import annotations

import numpy as np
import pytest

from tests.ops.util import BACKENDS, check_op


@pytest.mark.parametrize("backend", BACKENDS)
def test_add_of_int32_and_relu_of_float16(backend: str, rng: np.random.Generator) -> None:
    a = rng.integers(-100, 100, (3, 4)).astype(np.int32)
    b = rng.integers(-100, 100, (4,)).astype(np.int32)
    check_op("Add", {"a": a, "b": b}, backend=backend)
    x = rng.standard_normal((2, 5)).astype(np.float16)
    check_op("Relu", {"x": x}, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_reshape_with_a_pinned_shape_input(backend: str, rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    shape = np.array([4, -1], dtype=np.int64)
    check_op("Reshape", {"x": x, "shape": shape}, backend=backend, pinned=["shape"])

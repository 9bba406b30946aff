"""Einsum against onnxruntime (or numpy.einsum, for the forms onnxruntime rejects) on fresh random inputs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from reprobuild.core.errors import ReprobuildError
from tests.ops.util import BACKENDS, build_and_run, check_op, node_model

EQUATIONS: list[tuple[str, list[tuple[int, ...]]]] = [
    ("ij,jk->ik", [(3, 4), (4, 5)]),
    ("ij,jk", [(3, 4), (4, 5)]),
    ("bij, bjk -> bik", [(2, 3, 4), (2, 4, 5)]),
    ("bij,bjk->bik", [(2, 3, 4), (1, 4, 5)]),  # a size-1 subscript stretches
    ("ii->i", [(4, 4)]),
    ("ii", [(4, 4)]),
    ("i...i", [(3, 2, 3)]),
    ("...ij,...jk->...ik", [(2, 3, 3, 4), (2, 3, 4, 2)]),
    ("ij...->...", [(2, 3, 4)]),
    ("i,j->ij", [(3,), (4,)]),
    ("ijk->kji", [(2, 3, 4)]),
    ("abc,cd,de->abe", [(2, 3, 4), (4, 5), (5, 2)]),
    ("i,i", [(5,), (5,)]),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", range(len(EQUATIONS)))
def test_einsum_equations(backend: str, rng: np.random.Generator, case: int) -> None:
    equation, shapes = EQUATIONS[case]
    inputs = {f"x{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}
    check_op("Einsum", inputs, backend=backend, rtol=1e-5, atol=1e-5, equation=equation)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("equation, shapes", [
    ("Ab,bc->Ac", [(2, 3), (3, 4)]),  # capital letters
    ("...i,...i->...", [(2, 3), (3,)]),  # ellipses of different ranks broadcast, as in NumPy
    ("...,...", [(2, 1), (3,)]),
    ("->", [()]),
])
def test_einsum_forms_onnxruntime_rejects(backend: str, rng: np.random.Generator, equation: str,
                                          shapes: list[tuple[int, ...]]) -> None:
    inputs = {f"x{i}": rng.standard_normal(s) for i, s in enumerate(shapes)}
    want = np.asarray(np.einsum(equation, *inputs.values()))
    model = node_model("Einsum", inputs, equation=equation)
    del model.graph.output[:]  # ONNX's shape inference rejects ellipses of different ranks: declare the output
    model.graph.output.append(helper.make_tensor_value_info("y", onnx.TensorProto.DOUBLE, list(want.shape)))
    np.testing.assert_allclose(build_and_run(model, inputs, backend)["y"], want, rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_einsum_integers_and_half_precision(backend: str, rng: np.random.Generator) -> None:
    a = rng.integers(-100, 100, (3, 4)).astype(np.int32)
    b = rng.integers(-100, 100, (4, 2)).astype(np.int32)
    check_op("Einsum", {"a": a, "b": b}, backend=backend, equation="ij,jk->ik")
    a64, b64 = a.astype(np.int64), b.astype(np.int64)
    check_op("Einsum", {"a": a64, "b": b64}, backend=backend, equation="ij,jk->ki")
    h = rng.standard_normal((2, 3, 4)).astype(np.float16)
    g = rng.standard_normal((2, 4, 3)).astype(np.float16)
    want = np.einsum("bij,bjk->bik", h.astype(np.float32), g.astype(np.float32)).astype(np.float16)
    check_op("Einsum", {"h": h, "g": g}, backend=backend, equation="bij,bjk->bik", expected={"y": want},
             rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("equation, shapes", [
    ("ij,jk->ik", [(3, 4), (5, 6)]),
    ("ij->ii", [(3, 3)]),
    ("ij->k", [(3, 3)]),
    ("...ij->ij", [(2, 3, 4)]),
    ("i$->i", [(3, 3)]),
    ("ij,jk->ik", [(3, 4)]),
])
def test_einsum_errors_name_the_node(rng: np.random.Generator, equation: str, shapes: list[tuple[int, ...]]) -> None:
    inputs = {f"x{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}
    model = node_model("Einsum", inputs, equation=equation)
    del model.graph.output[:]  # ONNX's shape inference leaves an invalid equation's output undeclared
    model.graph.output.append(helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1]))
    with pytest.raises(ReprobuildError, match=r"node .*\(op Einsum\)"):
        build_and_run(model, inputs)

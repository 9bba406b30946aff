"""The formula table (kernels/formulas.py): one formula per elementwise op, from which the fused elementwise
kernels and epilogue.cuh are written. On the CPU: the table evaluated by NumPy gives each op reference's values,
op by op, on random inputs with edge values; the C it writes is deterministic, and the committed epilogue.cuh is
what it gives. On a GPU: the epilogue's activations, compiled from the header, match the reference."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from reprobuild.kernels import formulas
from reprobuild.kernels.formulas import (
    ACTIVATION_CODES,
    EPILOGUE_ACTIVATIONS,
    FORMULAS,
    HELPERS,
    c_expression,
    epilogue_header,
    evaluate,
    helper_definitions,
)
from reprobuild.kernels.gemm import ACTIVATIONS
from reprobuild.kernels.identity import package_text
from reprobuild.layers import op_fused_conv
from reprobuild.layers.op_fused_elementwise import BINARY, STEP_OPS, step_definition
from tests.helpers import CUDA_SKIP

#: Edge values every formula meets: signed zeros, infinities, NaN, the float32 extremes, subnormals, and the
#: places where formulas switch branch (0, +-1, +-3 for HardSwish, large arguments of exp).
EDGES = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 3.0, -3.0, 0.5, -0.5, 88.8, -88.8, 104.0, -104.0,
                  float(np.finfo(np.float32).max), -float(np.finfo(np.float32).max), float(np.finfo(np.float32).tiny),
                  1e-45, -1e-45, 1e-20, -1e-20], dtype=np.float32)


def _variants(op: str) -> list[dict[str, Any]]:
    """The canonical attributes each op is checked with (defaults and the other branches)."""
    return {
        "Clip": [{"max": 1.5, "max_from": "value", "min": -0.25, "min_from": "value"},
                 {"max": 0, "max_from": "none", "min": 0.0, "min_from": "value"},
                 {"max": 2.0, "max_from": "value", "min": 0, "min_from": "none"},
                 {"max": -1.0, "max_from": "value", "min": 1.0, "min_from": "value"}],  # min > max: max, as ONNX
        "Elu": [{"alpha": 1.0}, {"alpha": 0.7}],
        "Gelu": [{"approximate": "none"}, {"approximate": "tanh"}],
        "HardSigmoid": [{"alpha": float(np.float32(0.2)), "beta": 0.5}],
        "LeakyRelu": [{"alpha": float(np.float32(0.01))}],
    }.get(op, [{}])


def _operands(op: str, rng: np.random.Generator) -> list[np.ndarray]:
    """Fresh random inputs with every edge value, in each operand position against every other."""
    count = 2 if op in BINARY else 1
    random = [(rng.standard_normal(4096) * 4).astype(np.float32) for _ in range(count)]
    if count == 1:
        return [np.concatenate([EDGES, random[0]])]
    grid = np.meshgrid(EDGES, EDGES, indexing="ij")
    return [np.concatenate([g.reshape(-1), r]) for g, r in zip(grid, random)]


def test_the_table_covers_every_step_op_and_the_epilogue_agrees_with_the_ops() -> None:
    assert set(FORMULAS) == set(STEP_OPS)
    assert set(ACTIVATION_CODES) == set(op_fused_conv.ACTIVATIONS)
    assert dict(ACTIVATIONS) == {"": 0, "Relu": 1, "Clip": 2, "Sigmoid": 3, "SiLU": 4}  # the kernels' codes


@pytest.mark.parametrize("op", STEP_OPS)
def test_each_formula_evaluated_by_numpy_gives_the_reference(op: str, rng: np.random.Generator) -> None:
    """The formula the C is written from, evaluated in float32 with NumPy, gives the op reference's values (NaN
    where it gives NaN; -0 and +0 are equal), edge values included: the kernels differ from the reference only
    where CUDA's libm (expf, tanhf, erff, powf) does."""
    for attrs in _variants(op):
        xs = _operands(op, rng)
        with np.errstate(all="ignore"):
            want = step_definition(op).compute(np, attrs, *xs)[0]
        got = evaluate(op, xs, attrs)
        assert got.dtype == want.dtype == np.float32
        np.testing.assert_array_equal(got, want, err_msg=f"{op} {attrs}")


def _epilogue_reference(activation: str, v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    attrs = {"activation": activation, "activation_min": lo, "activation_max": hi}
    with np.errstate(all="ignore"):
        return op_fused_conv.epilogue(np, attrs, v, None)


def _epilogue_by_table(activation: str, v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The activation's program in EPILOGUE_ACTIVATIONS evaluated by NumPy, rounding between steps (float32: no-op)."""
    program = dict(EPILOGUE_ACTIVATIONS)[activation]
    scope: dict[str, Any] = {"v": v}
    attrs: Mapping[str, Any] = {"min": lo, "min_from": "value", "max": hi, "max_from": "value"}
    for k, (op, operands) in enumerate(program):
        scope[f"s{k}"] = evaluate(op, [scope[o] for o in operands], attrs)
    return scope[f"s{len(program) - 1}"] if program else v


@pytest.mark.parametrize("activation", list(ACTIVATION_CODES))
@pytest.mark.parametrize("bounds", [(0.0, 6.0), (-1.5, 0.25), (2.0, -2.0)], ids=["relu6", "narrow", "min_above_max"])
def test_each_epilogue_activation_evaluated_by_numpy_gives_the_reference(
        activation: str, bounds: tuple[float, float], rng: np.random.Generator) -> None:
    v = np.concatenate([EDGES, (rng.standard_normal(4096) * 4).astype(np.float32)])
    got = _epilogue_by_table(activation, v, *bounds)
    np.testing.assert_array_equal(got, _epilogue_reference(activation, v, *bounds), err_msg=activation)


def test_the_c_is_deterministic_and_written_from_the_table() -> None:
    assert epilogue_header() == epilogue_header() and helper_definitions() == helper_definitions()
    for op in STEP_OPS:
        for attrs in _variants(op):
            operands = ["a0", "a1"][:2 if op in BINARY else 1]
            text = c_expression(op, operands, attrs)
            assert text == c_expression(op, operands, dict(reversed(list(attrs.items()))))
            assert text.count("(") == text.count(")") and "a0" in text, (op, text)
    assert c_expression("Sigmoid", ["a0"], {}) == "sigmoid(a0)"
    assert c_expression("Add", ["x", "y"], {}) == "__fadd_rn(x, y)"
    assert c_expression("HardSigmoid", ["x"], {"alpha": 0.2, "beta": 0.5}) == \
        "clip01(__fadd_rn(__fmul_rn(__int_as_float(0x3e4ccccd), x), 0.5f))"
    assert c_expression("Clip", ["v"], {"min": "lo", "min_from": "value", "max": "hi", "max_from": "value"}) == \
        "min_nan(max_nan(v, lo), hi)"
    for helper in HELPERS:
        assert f"__device__ __forceinline__ float {helper.__name__}(float " in helper_definitions()
    assert "const float e = expf((-fabsf(x)));" in helper_definitions()  # sigmoid's let
    with pytest.raises(Exception, match="has no formula for Softsign"):
        c_expression("Softsign", ["x"], {})


def test_the_committed_epilogue_header_is_what_the_table_gives() -> None:
    """epilogue.cuh is generated; edit formulas.py and run `python -m reprobuild.kernels.formulas`."""
    assert package_text("epilogue.cuh") == epilogue_header()
    assert formulas.main(["--check"]) == 0
    header = epilogue_header()
    for code, (name, program) in enumerate(EPILOGUE_ACTIVATIONS):
        assert (f"(act == {code})" in header) == bool(program), name
    assert "v = __fmul_rn(v, s0);" in header and "const float s0 = rnd(sigmoid(v));" in header  # SiLU


# --- on a GPU -------------------------------------------------------------------------------------------------------

_EPILOGUE_TEST_KERNEL = r"""
#include "epilogue.cuh"
extern "C" __global__ void apply_epilogue(const elem_t* x, const elem_t* residual, elem_t* out, long long total,
                                          int act, float lo, float hi)
{
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step)
        out[i] = to_elem(residual_activation(ld(x[i]), residual, i, act, lo, hi));
}
"""


@pytest.mark.gpu
@pytest.mark.skipif(CUDA_SKIP is not None, reason=f"no CUDA: {CUDA_SKIP}")
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("activation", list(ACTIVATION_CODES))
@pytest.mark.parametrize("bounds", [(0.0, 6.0), (2.0, -2.0)], ids=["relu6", "min_above_max"])
def test_the_generated_epilogue_matches_the_reference_on_the_gpu(
        activation: str, dtype: str, bounds: tuple[float, float], rng: np.random.Generator) -> None:
    """epilogue.cuh's residual_activation, compiled as the convolutions and GEMMs compile it, against the reference
    epilogue (Add, then the activation's ops, each rounded to the dtype)."""
    import cupy as cp

    from reprobuild.kernels.backend import get_backend
    from reprobuild.kernels.nvrtc import DTYPE_DEFINES, load_source, package_headers

    backend = get_backend("cuda")
    x = np.concatenate([EDGES, (rng.standard_normal(4096) * 4).astype(np.float32)]).astype(dtype)
    residual = (rng.standard_normal(x.size) * 2).astype(dtype)
    with backend.device:
        module = load_source(f"epilogue_test_{dtype}.cu", _EPILOGUE_TEST_KERNEL, backend.compute_capability,
                             backend.device_id, DTYPE_DEFINES[dtype], package_headers())
        kernel = module.function("apply_epilogue")
        dx, dr, out = cp.asarray(x), cp.asarray(residual), cp.empty_like(cp.asarray(x))
        kernel((32,), (256,), (dx, dr, out, np.int64(x.size), np.int32(ACTIVATION_CODES[activation]),
                               np.float32(bounds[0]), np.float32(bounds[1])))
        got = cp.asnumpy(out)
    attrs = {"activation": activation, "activation_min": bounds[0], "activation_max": bounds[1]}
    with np.errstate(all="ignore"):
        want = op_fused_conv.epilogue(np, attrs, x, residual)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{activation}: NaN positions")
    rtol, atol = (1e-6, 1e-7) if dtype == "float32" else (1e-3, 1e-3)
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol,
                               equal_nan=True, err_msg=f"{activation} {dtype}")

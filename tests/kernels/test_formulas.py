"""The formula table (reprobuild/layers/formulas.py, written as C by kernels/formulas.py): one formula per
elementwise op. On the CPU: each op's layer computes through the table (its result is the table's, for every dtype
it supports, and changes when the table's entry does); the helpers' C bodies compute what the array functions they
stand for compute; the C it writes is deterministic, and the committed epilogue.cuh is what it gives. On a GPU: the
epilogue's activations, compiled from the header, match the reference."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import pytest

from reprobuild.core.dtypes import FLOATS, INTEGERS, np_dtype
from reprobuild.kernels import formulas
from reprobuild.kernels.formulas import (
    ACTIVATION_CODES,
    EPILOGUE_ACTIVATIONS,
    c_expression,
    epilogue_header,
    helper_definitions,
)
from reprobuild.kernels.gemm import ACTIVATIONS
from reprobuild.kernels.identity import package_text
from reprobuild.layers import formulas as table
from reprobuild.layers import op_fused_conv
from reprobuild.layers.formulas import FORMULAS, HELPERS, Math, Value, XpMath, evaluate
from reprobuild.layers.op_fused_elementwise import BINARY, STEP_OPS, step_definition
from tests.helpers import CUDA_SKIP

#: Edge values every formula meets: signed zeros, infinities, NaN, the float32 extremes, subnormals, and the
#: places where formulas switch branch (0, +-1, +-3 for HardSwish, large arguments of exp).
EDGES = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 3.0, -3.0, 0.5, -0.5, 88.8, -88.8, 104.0, -104.0,
                  float(np.finfo(np.float32).max), -float(np.finfo(np.float32).max), float(np.finfo(np.float32).tiny),
                  1e-45, -1e-45, 1e-20, -1e-20], dtype=np.float32)

#: The integer paths that are not the table's (it is a float table): Div's truncating division, Erf-9's truncation
#: of the float64 erf (whose erf is the table's), Pow's exact integer powers; and Pow's float path with an integer
#: exponent (float64 with the integer's parity). Every other op computes integers through the table too.
NOT_FOR_INTEGERS = ("Div", "Erf", "Pow")


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


def _operands(op: str, rng: np.random.Generator, dtype: str = "float32") -> list[np.ndarray]:
    """Fresh random inputs with every edge value, in each operand position against every other, in ``dtype``
    (integers: random values of the whole range and small ones)."""
    count = 2 if op in BINARY else 1
    if dtype in INTEGERS:
        info = np.iinfo(dtype)
        return [np.concatenate([rng.integers(info.min, info.max, 2048, dtype=dtype, endpoint=True),
                                rng.integers(max(info.min, -50), 50, 2048, dtype=dtype)]) for _ in range(count)]
    random = [(rng.standard_normal(4096) * 4).astype(np.float32) for _ in range(count)]
    if count == 1:
        values = [np.concatenate([EDGES, random[0]])]
    else:
        grid = np.meshgrid(EDGES, EDGES, indexing="ij")
        values = [np.concatenate([g.reshape(-1), r]) for g, r in zip(grid, random)]
    with np.errstate(over="ignore"):  # float32's extremes are infinite in float16
        return [v.astype(np_dtype(dtype)) for v in values]


def _dtypes(op: str) -> list[str]:
    """The float and integer dtypes the op's layer computes (Identity takes every type; these are the numeric)."""
    supported = step_definition(op).dtypes
    return [d for d in (*FLOATS, *INTEGERS) if d in supported and (d in FLOATS or op not in NOT_FOR_INTEGERS)]


def _integer_variant(op: str, attrs: dict[str, Any], dtype: str) -> dict[str, Any] | None:
    """``attrs`` for an integer input: Clip's bounds as integers of the type (None where a bound is negative and the
    type unsigned); other ops' attributes are those of floats."""
    if op != "Clip":
        return attrs
    bounds = {key: int(attrs[key]) for key in ("min", "max")}
    if np.iinfo(dtype).min == 0 and min(bounds.values()) < 0:
        return None
    return {**attrs, **bounds}


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(f"u{a.dtype.itemsize}")


def _by_table(op: str, xs: Sequence[np.ndarray], attrs: Mapping[str, Any]) -> np.ndarray:
    """What the table gives for the layer: float16 and bfloat16 widened to float32 (but for Relu, which computes
    them as they are), the formula evaluated by NumPy, rounded once to the input's dtype."""
    dtype = xs[0].dtype
    widen = str(dtype) in ("float16", "bfloat16") and op != "Relu"
    operands = [x.astype(np.float32) for x in xs] if widen else list(xs)
    return np.asarray(evaluate(np, op, operands, attrs)).astype(dtype)


def test_the_table_covers_every_step_op_and_the_epilogue_agrees_with_the_ops() -> None:
    assert set(FORMULAS) == set(STEP_OPS)
    assert set(ACTIVATION_CODES) == set(op_fused_conv.ACTIVATIONS)
    assert dict(ACTIVATIONS) == {"": 0, "Relu": 1, "Clip": 2, "Sigmoid": 3, "SiLU": 4}  # the kernels' codes


@pytest.mark.parametrize("op", STEP_OPS)
def test_each_layer_computes_through_the_table(op: str, rng: np.random.Generator) -> None:
    """The layer's reference is its formula in the table, bit for bit, for every float dtype it supports and every
    integer one it computes through the table (all but NOT_FOR_INTEGERS), edge values included."""
    for dtype in _dtypes(op):
        for float_attrs in _variants(op):
            attrs = float_attrs if dtype in FLOATS else _integer_variant(op, float_attrs, dtype)
            if attrs is None:
                continue
            xs = _operands(op, rng, dtype)
            with np.errstate(all="ignore"):
                got = step_definition(op).compute(np, attrs, *xs)[0]
                want = _by_table(op, xs, attrs)
            assert got.dtype == want.dtype == np_dtype(dtype), (op, dtype)
            np.testing.assert_array_equal(_bits(got), _bits(want), err_msg=f"{op} {dtype} {attrs}")


def _seven(m: Math, operands: Sequence[Value], attrs: Mapping[str, Any]) -> Value:
    """A formula no op has: 7 everywhere (on finite operands)."""
    return operands[0] * 0 + 7


@pytest.mark.parametrize("op", STEP_OPS)
def test_a_changed_table_entry_changes_the_layer(op: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The layer reads its formula from the table when it computes: no copy of it is left in the layer."""
    attrs = _variants(op)[0]
    xs = [np.linspace(0.5, 2.5, 8, dtype=np.float32)] * (2 if op in BINARY else 1)
    before = step_definition(op).compute(np, attrs, *xs)[0]
    assert not np.all(before == 7)
    monkeypatch.setattr(table, "FORMULAS", MappingProxyType({**FORMULAS, op: _seven}))
    np.testing.assert_array_equal(step_definition(op).compute(np, attrs, *xs)[0], np.full(8, 7, np.float32))


@pytest.mark.parametrize("helper", [h for h in HELPERS if hasattr(h, "array_form")], ids=lambda h: h.__name__)
def test_each_array_helper_body_computes_its_array_function(helper: Any, rng: np.random.Generator) -> None:
    """The C of relu, clip01, max_nan and min_nan is written from their bodies; the references call the array
    function each stands for (NumPy's choice of zero and of NaN is its own). Evaluated with NumPy, the body gives
    the function's values (NaN where it gives NaN; -0 and +0 are equal)."""
    count = len(inspect.signature(helper).parameters) - 1
    xs = _operands("Add" if count == 2 else "Abs", rng)
    m = XpMath(np)
    with np.errstate(all="ignore"):
        body = helper(m, *(m.value(x) for x in xs)).v
        function = helper.array_form(np, *xs)
    assert body.dtype == function.dtype == np.float32
    np.testing.assert_array_equal(body, function, err_msg=helper.__name__)


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
        scope[f"s{k}"] = evaluate(np, op, [scope[o] for o in operands], attrs)
    return scope[f"s{len(program) - 1}"] if program else v


@pytest.mark.parametrize("activation", list(ACTIVATION_CODES))
@pytest.mark.parametrize("bounds", [(0.0, 6.0), (-1.5, 0.25), (2.0, -2.0)], ids=["relu6", "narrow", "min_above_max"])
def test_each_epilogue_activation_evaluated_by_numpy_gives_the_reference(
        activation: str, bounds: tuple[float, float], rng: np.random.Generator) -> None:
    v = np.concatenate([EDGES, (rng.standard_normal(4096) * 4).astype(np.float32)])
    with np.errstate(all="ignore"):
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

"""op_math: the elementwise math ops against onnxruntime (or NumPy where onnxruntime has no kernel)."""

from __future__ import annotations

import math
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from reprobuild.core.errors import ReprobuildError
from tests.ops.util import BACKENDS, build_and_run, check_op, node_model

#: op -> (low, high) of the random inputs: each op's domain, away from poles and overflow.
FLOAT_OPS = {
    "Abs": (-3, 3), "Acos": (-0.99, 0.99), "Acosh": (1.01, 5), "Asin": (-0.99, 0.99), "Asinh": (-5, 5),
    "Atan": (-5, 5), "Atanh": (-0.99, 0.99), "Ceil": (-5, 5), "Cos": (-5, 5), "Cosh": (-5, 5), "Erf": (-3, 3),
    "Exp": (-5, 5), "Floor": (-5, 5), "Log": (0.01, 10), "Neg": (-3, 3), "Reciprocal": (0.1, 5),
    "Round": (-5, 5), "Sign": (-3, 3), "Sin": (-5, 5), "Sinh": (-5, 5), "Sqrt": (0, 10), "Tan": (-1.5, 1.5),
    "Tanh": (-5, 5),
}


def uniform(rng: np.random.Generator, op: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    low, high = FLOAT_OPS[op]
    return rng.uniform(low, high, shape).astype(dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", sorted(FLOAT_OPS))
def test_float_unary_against_onnxruntime(backend: str, op: str, rng: np.random.Generator) -> None:
    # opset 21: onnxruntime has no kernels for the trigonometric ops' version 22 (it only adds bfloat16)
    check_op(op, {"x": uniform(rng, op, (3, 5), np.float32)}, backend=backend, opset=21)
    if op not in ("Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "Cosh", "Erf", "Sinh", "Tan"):  # float only
        check_op(op, {"x": uniform(rng, op, (2, 3), np.float64)}, backend=backend, opset=21, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", ["Abs", "Cos", "Erf", "Exp", "Log", "Reciprocal", "Round", "Sqrt", "Tanh"])
def test_float16_computes_in_float32(backend: str, op: str, rng: np.random.Generator) -> None:
    x = uniform(rng, op, (4, 3), np.float16)
    check_op(op, {"x": x}, backend=backend, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bfloat16_rounds_the_float32_result_once(backend: str, rng: np.random.Generator) -> None:
    if backend != "cpu":
        pytest.skip("bfloat16 op cases are checked on the CPU only (CuPy holds bfloat16 arrays, but its "
                    "ufuncs in bfloat16 are not verified yet)")
    x = rng.uniform(-3, 3, (3, 4)).astype(ml_dtypes.bfloat16)
    want = np.exp(x.astype(np.float32)).astype(ml_dtypes.bfloat16)
    got = check_op("Exp", {"x": x}, backend=backend, expected={"y": want}, rtol=0, atol=0)
    assert got["y"].dtype == want.dtype


@pytest.mark.parametrize("backend", BACKENDS)
def test_round_is_half_to_even(backend: str) -> None:
    x = np.array([0.5, 1.5, 2.5, -0.5, -2.5, 2.4999, -3.5001, 7.0], dtype=np.float32)
    check_op("Round", {"x": x}, backend=backend, expected={"y": np.array([0, 2, 2, -0.0, -2, 2, -4, 7],
                                                                          dtype=np.float32)})


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64])
def test_integer_abs_neg_sign_wrap_like_c(backend: str, dtype: Any, rng: np.random.Generator) -> None:
    info = np.iinfo(dtype)
    x = np.concatenate([rng.integers(-100, 100, 9), [info.min, info.max, 0]]).astype(dtype)
    for op in ("Abs", "Neg", "Sign"):
        check_op(op, {"x": x}, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unsigned_abs_and_sign(backend: str, rng: np.random.Generator) -> None:
    x = np.concatenate([rng.integers(0, 255, 7), [0, 255]]).astype(np.uint8)
    check_op("Abs", {"x": x}, backend=backend)
    check_op("Sign", {"x": x}, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sign_of_nan_zero_and_inf(backend: str) -> None:
    x = np.array([np.nan, -0.0, 0.0, -np.inf, np.inf, -2.5], dtype=np.float32)
    check_op("Sign", {"x": x}, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_erf_of_opset_9_truncates(backend: str, rng: np.random.Generator) -> None:
    x = np.concatenate([rng.integers(-9, 9, 8), [0, 5, 6, -6, 1000]]).astype(np.int32)
    want = np.trunc([math.erf(v) for v in x.tolist()]).astype(np.int32)
    check_op("Erf", {"x": x}, backend=backend, opset=12, expected={"y": want})
    f = np.linspace(-4, 4, 9)  # float64, which onnxruntime's Erf lacks: C's erf is the reference
    check_op("Erf", {"x": f}, backend=backend, expected={"y": np.array([math.erf(v) for v in f])}, rtol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("negative", "positive"), [(1, 1), (0, 1), (1, 0), (0, 0)])
def test_isinf_detects_the_signs_asked_for(backend: str, negative: int, positive: int,
                                           rng: np.random.Generator) -> None:
    x = rng.standard_normal(8).astype(np.float32)
    x[[1, 4, 6]] = [np.inf, -np.inf, np.nan]
    check_op("IsInf", {"x": x}, backend=backend, detect_negative=negative, detect_positive=positive)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_isnan_and_isinf_across_float_types(backend: str, dtype: Any, rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 5)).astype(dtype)
    x[0, 1], x[1, 2], x[1, 4] = np.nan, np.inf, -np.inf
    check_op("IsNaN", {"x": x}, backend=backend)
    check_op("IsInf", {"x": x}, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_isnan_and_isinf_on_float8(backend: str, rng: np.random.Generator) -> None:
    if backend != "cpu":
        pytest.skip("the float8 types are host-only (ml_dtypes; CuPy has no float8 arrays)")
    x = rng.standard_normal(6).astype(np.float32)
    x[[1, 3, 5]] = [np.nan, np.inf, -np.inf]
    e5m2 = x.astype(ml_dtypes.float8_e5m2)
    check_op("IsNaN", {"x": e5m2}, backend=backend, expected={"y": np.isnan(x)})
    check_op("IsInf", {"x": e5m2}, backend=backend, expected={"y": np.isinf(x)})
    e4m3 = x.astype(ml_dtypes.float8_e4m3fn)  # no infinities: inf becomes NaN
    check_op("IsInf", {"x": e4m3}, backend=backend, expected={"y": np.zeros(6, dtype=bool)})


# --- Pow -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("base", "exponent"), [
    (np.float32, np.float32), (np.float16, np.float16), (np.float64, np.float64), (np.float32, np.int64),
    (np.float32, np.int32), (np.float32, np.float64), (np.float64, np.float32), (np.float16, np.float32),
])
def test_float_pow_with_exponents_of_any_type(backend: str, base: Any, exponent: Any,
                                              rng: np.random.Generator) -> None:
    a = rng.uniform(0.5, 3, (3, 4)).astype(base)
    a[0] = -a[0]  # negative bases: integral exponents are fine, fractional ones give NaN on both sides
    integral = np.dtype(exponent).kind == "i"
    b = (rng.integers(-4, 5, (4,)) if integral else rng.uniform(-3, 3, (4,))).astype(exponent)
    check_op("Pow", {"a": a, "b": b}, backend=backend, rtol=1e-3 if np.float16 in (base, exponent) else 1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("base", "exponent"), [(np.int32, np.int32), (np.int64, np.int64), (np.int32, np.int64),
                                                (np.int64, np.float32), (np.int32, np.float64)])
def test_integer_pow_against_onnxruntime(backend: str, base: Any, exponent: Any,
                                         rng: np.random.Generator) -> None:
    a = np.concatenate([rng.integers(-6, 7, 10), [1, -1, -1, 5, 0]]).astype(base)
    b = np.concatenate([rng.integers(0, 8, 10), [-3, -3, -4, -1, 2]]).astype(exponent)
    if np.dtype(exponent).kind == "f":
        b[:4] += 0.5  # fractional exponents truncate; keep their bases non-negative (no NaN)
        a[:4] = np.abs(a[:4])
    check_op("Pow", {"a": a, "b": b}, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_pow_is_exact_and_wraps(backend: str, rng: np.random.Generator) -> None:
    a = rng.integers(-40, 40, 12).astype(np.int64)
    b = rng.integers(0, 70, 12).astype(np.int64)
    want = np.array([pow(int(x), int(e), 2**64) for x, e in zip(a, b)], dtype=np.uint64).view(np.int64)
    check_op("Pow", {"a": a, "b": b}, backend=backend, expected={"y": want})
    # an integral float exponent is exact too, even where double arithmetic is not (7 ** 21 > 2 ** 53)
    check_op("Pow", {"a": np.array([7, 3, -3], np.int64), "b": np.array([21.0, 39.0, 2.0**70 + 2**20], np.float64)},
             backend=backend, expected={"y": np.array([7**21, 3**39, pow(-3, 2**70 + 2**20, 2**64)],
                                                      dtype=np.uint64).view(np.int64)})


@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_pow_with_fractional_exponent_truncates_and_saturates(backend: str) -> None:
    a = np.array([4, 16, 10, 2, 0, 3], np.int32)
    b = np.array([0.5, 0.25, 1.5, 40.5, -0.5, -0.5], np.float32)
    want = np.array([2, 2, 31, 2**31 - 1, 2**31 - 1, 0], np.int32)
    check_op("Pow", {"a": a, "b": b}, backend=backend, expected={"y": want})


# --- Mod -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint16])
@pytest.mark.parametrize("fmod", [0, 1])
def test_integer_mod_against_onnxruntime(backend: str, dtype: Any, fmod: int, rng: np.random.Generator) -> None:
    signed = np.dtype(dtype).kind == "i"
    a = rng.integers(-100 if signed else 0, 100, (3, 5)).astype(dtype)
    b = rng.integers(1, 12, (5,)).astype(dtype)
    if signed:
        b[::2] = -b[::2]
    check_op("Mod", {"a": a, "b": b}, backend=backend, fmod=fmod)


@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_mod_by_zero_and_minus_one(backend: str) -> None:
    a = np.array([-128, -128, 7, -7, 127], np.int8)
    b = np.array([-1, 0, 0, -1, 3], np.int8)
    for fmod in (0, 1):
        check_op("Mod", {"a": a, "b": b}, backend=backend, fmod=fmod,
                 expected={"y": np.array([0, 0, 0, 0, 1], np.int8)})


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_mod_both_conventions(backend: str, dtype: Any, rng: np.random.Generator) -> None:
    a = rng.uniform(-10, 10, (4, 3)).astype(dtype)
    b = rng.uniform(0.5, 4, (3,)).astype(dtype) * np.array([1, -1, 1], dtype)
    check_op("Mod", {"a": a, "b": b}, backend=backend, fmod=1)
    with np.errstate(all="ignore"):
        work = np.float32 if dtype == np.float16 else dtype
        want = np.mod(a.astype(work), b.astype(work)).astype(dtype)
    check_op("Mod", {"a": a, "b": b}, backend=backend, fmod=0, expected={"y": want}, rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float_mod_special_cases_of_mod_28(backend: str) -> None:
    a = np.array([-0.0, 0.0, 3.0, -3.0, np.inf, 2.0, 5.0, np.nan], np.float32)
    b = np.array([2.0, -2.0, -np.inf, np.inf, 2.0, 0.0, np.nan, 1.0], np.float32)
    want = np.array([0.0, -0.0, -np.inf, np.inf, np.nan, np.nan, np.nan, np.nan], np.float32)
    got = check_op("Mod", {"a": a, "b": b}, backend=backend, fmod=0, expected={"y": want})
    np.testing.assert_array_equal(np.signbit(got["y"][:4]), [False, True, True, False])


# --- refusals ------------------------------------------------------------------------------------------------------


def test_unsupported_forms_are_typed_errors_naming_the_node() -> None:
    a = np.array([1, 2], np.int32)
    with pytest.raises(ReprobuildError, match=r"Mod.*fmod is 2"):
        build_and_run(node_model("Mod", {"a": a, "b": a}, fmod=2), {"a": a, "b": a})
    u = np.array([1, 2], np.uint8)
    with pytest.raises(ReprobuildError, match=r"Neg.*uint8"):
        build_and_run(node_model("Neg", {"x": u}), {"x": u})
    with pytest.raises(ReprobuildError, match=r"Floor.*int32"):
        build_and_run(node_model("Floor", {"x": a}), {"x": a})

"""op_logic: comparisons, boolean logic, bit operations, Where and BitCast against onnxruntime (or NumPy where
onnxruntime has no kernel)."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import onnx
import pytest

from reprobuild.core.errors import ReprobuildError
from tests.ops.util import BACKENDS, build_and_run, check_op, node_model

COMPARISONS = ("Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", COMPARISONS)
def test_float_comparisons_with_nan_and_broadcasting(backend: str, op: str, rng: np.random.Generator) -> None:
    a = rng.integers(-3, 3, (3, 4)).astype(np.float32) / 2  # small grid: equal pairs are common
    b = rng.integers(-3, 3, (4,)).astype(np.float32) / 2
    a[0, 0], a[1, 1], b[1] = np.nan, np.inf, np.nan
    check_op(op, {"a": a, "b": b}, backend=backend)
    check_op(op, {"a": a.astype(np.float16), "b": b.astype(np.float16)}, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.int8, np.uint16, np.int64, np.uint64])
def test_integer_comparisons(backend: str, dtype: Any, rng: np.random.Generator) -> None:
    info = np.iinfo(dtype)
    a = np.array([*rng.integers(0, 4, 6).tolist(), int(info.min), int(info.max)], dtype=dtype)
    b = np.array([*rng.integers(0, 4, 6).tolist(), int(info.max), int(info.min)], dtype=dtype)
    for op in COMPARISONS:
        check_op(op, {"a": a, "b": b}, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bfloat16_comparison(backend: str, rng: np.random.Generator) -> None:
    if backend != "cpu":
        pytest.skip("bfloat16 op cases are checked on the CPU only (CuPy holds bfloat16 arrays, but its "
                    "ufuncs in bfloat16 are not verified yet)")
    a = rng.integers(-3, 3, 8).astype(ml_dtypes.bfloat16)
    b = rng.integers(-3, 3, 8).astype(ml_dtypes.bfloat16)
    check_op("Less", {"a": a, "b": b}, backend=backend, expected={"y": a.astype(np.float32) < b.astype(np.float32)})


@pytest.mark.parametrize("backend", BACKENDS)
def test_boolean_logic(backend: str, rng: np.random.Generator) -> None:
    a = rng.random((2, 3, 4)) < 0.5
    b = rng.random((3, 1)) < 0.5
    for op in ("And", "Or", "Xor", "Equal"):
        check_op(op, {"a": a, "b": b}, backend=backend)
    check_op("Not", {"x": a}, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.uint64])
@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
def test_unsigned_bitshift(backend: str, dtype: Any, direction: str, rng: np.random.Generator) -> None:
    bits = 8 * np.dtype(dtype).itemsize
    a = rng.integers(0, np.iinfo(dtype).max, (2, 4), dtype=dtype, endpoint=True)
    b = rng.integers(0, bits, (4,)).astype(dtype)
    check_op("BitShift", {"a": a, "b": b}, backend=backend, opset=18, direction=direction)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
def test_bitshift_by_the_width_or_more_gives_the_fill(backend: str, direction: str) -> None:
    a = np.array([1, 255, 128, 7], np.uint8)
    b = np.array([8, 9, 200, 0], np.uint8)
    check_op("BitShift", {"a": a, "b": b}, backend=backend, direction=direction,
             expected={"y": np.array([0, 0, 0, 7], np.uint8)})


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64])
@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
def test_signed_bitshift_of_opset_28(backend: str, dtype: Any, direction: str, rng: np.random.Generator) -> None:
    bits = 8 * np.dtype(dtype).itemsize
    info = np.iinfo(dtype)
    a = np.concatenate([rng.integers(-1000, 1000, 8), [info.min, info.max, -1, -5, 5, -7]]).astype(dtype)
    b = np.concatenate([rng.integers(0, bits, 8), [1, 1, bits - 1, bits, bits + 3, -1]]).astype(dtype)
    check_op("BitShift", {"a": a, "b": b}, backend=backend, opset=28, direction=direction)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.int8, np.uint16, np.int32, np.uint64])
def test_bitwise_ops(backend: str, dtype: Any, rng: np.random.Generator) -> None:
    info = np.iinfo(dtype)
    a = rng.integers(info.min, info.max, (3, 4), dtype=dtype, endpoint=True)
    b = rng.integers(info.min, info.max, (4,), dtype=dtype, endpoint=True)
    for op in ("BitwiseAnd", "BitwiseOr", "BitwiseXor"):
        check_op(op, {"a": a, "b": b}, backend=backend)
    check_op("BitwiseNot", {"x": a}, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.bool_, np.float16])
def test_where_broadcasts_three_ways(backend: str, dtype: Any, rng: np.random.Generator) -> None:
    cond = rng.random((2, 1, 4)) < 0.5
    x = (rng.standard_normal((3, 1)) * 10).astype(dtype)
    y = (rng.standard_normal((4,)) * 10).astype(dtype)
    if np.dtype(dtype).kind == "f":
        x[0, 0] = np.nan
    # onnxruntime has no bool Where
    expected = {"y": np.where(cond, x, y)} if dtype == np.bool_ else None
    check_op("Where", {"c": cond, "x": x, "b": y}, backend=backend, expected=expected)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("source", "target"), [
    (np.float32, onnx.TensorProto.INT32), (np.int32, onnx.TensorProto.FLOAT), (np.float64, onnx.TensorProto.UINT64),
    (np.uint16, onnx.TensorProto.FLOAT16), (np.int8, onnx.TensorProto.UINT8), (np.bool_, onnx.TensorProto.UINT8),
])
def test_bitcast_keeps_the_bytes(backend: str, source: Any, target: int, rng: np.random.Generator) -> None:
    x = (rng.standard_normal((2, 3)) * 1000).astype(source)
    want = x.view(onnx.helper.tensor_dtype_to_np_dtype(target))
    got = check_op("BitCast", {"x": x}, backend=backend, expected={"y": want}, rtol=0, atol=0, to=target)
    np.testing.assert_array_equal(got["y"].view(np.uint8), want.view(np.uint8))


@pytest.mark.parametrize("backend", BACKENDS)
def test_bitcast_to_bool_and_to_bfloat16(backend: str, rng: np.random.Generator) -> None:
    x = np.array([0, 1, 0, 1], np.uint8)
    check_op("BitCast", {"x": x}, backend=backend, expected={"y": x.astype(bool)}, to=onnx.TensorProto.BOOL)
    if backend == "cpu":  # bfloat16 op cases are checked on the CPU only (see test_bfloat16_comparison)
        h = rng.integers(0, 2**16, 5, dtype=np.uint16)
        check_op("BitCast", {"x": h}, backend=backend, expected={"y": h.view(ml_dtypes.bfloat16)}, rtol=0, atol=0,
                 to=onnx.TensorProto.BFLOAT16)


def bitcast_model(source: int, target: int) -> onnx.ModelProto:
    """A BitCast model with its output declared (the checker cannot infer one for a refused width)."""
    node = onnx.helper.make_node("BitCast", ["x"], ["y"], to=target)
    graph = onnx.helper.make_graph([node], "bitcast", [onnx.helper.make_tensor_value_info("x", source, [2])],
                                   [onnx.helper.make_tensor_value_info("y", target, [2])])
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 26)])


def test_unsupported_forms_are_typed_errors_naming_the_node() -> None:
    a = np.array([1, 2], np.uint8)
    with pytest.raises(ReprobuildError, match=r"BitShift.*direction is 'UP'"):
        build_and_run(node_model("BitShift", {"a": a, "b": a}, direction="UP"), {"a": a, "b": a})
    x = np.array([1, 2], np.int32)
    with pytest.raises(ReprobuildError, match=r"BitCast.*widths must be equal"):
        build_and_run(bitcast_model(onnx.TensorProto.INT32, onnx.TensorProto.INT16), {"x": x})
    i8 = np.array([1, 2], np.int8)
    with pytest.raises(ReprobuildError, match=r"BitCast.*int4.*whole bytes"):
        build_and_run(bitcast_model(onnx.TensorProto.INT8, onnx.TensorProto.INT4), {"x": i8})
    f = np.array([1.0, 2.0], np.float32)
    with pytest.raises(ReprobuildError, match=r"And.*float32"):
        build_and_run(node_model("And", {"a": f, "b": f}), {"a": f, "b": f})

"""Quantization ops (op_quant) bit for bit: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear,
MatMulInteger, ConvInteger, QLinearMatMul and QLinearConv against onnxruntime, or against onnx's reference where
onnxruntime cannot take the form (int4/float8 arrays in Python, per-channel ConvInteger zero points) or computes
float16 steps in float32 (QuantizeLinear's division, QLinearMatMul's multiplier). MatMulInteger is checked
against the exact integer formula: onnxruntime's x86 uint8 x int8 kernel saturates intermediate sums and gets
some elements wrong."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator

from reprobuild.core.errors import ReprobuildError
from tests.ops.util import BACKENDS, build_and_run, check_op, node_model


def _reference(op: str, feeds: dict[str, np.ndarray], n_outputs: int = 1, **kwargs: Any) -> dict[str, np.ndarray]:
    """onnx's reference evaluator on the one-node model check_op builds."""
    model = node_model(op, feeds, n_outputs, **kwargs)
    names = [o.name for o in model.graph.output]
    return dict(zip(names, ReferenceEvaluator(model).run(None, feeds)))


def _ints(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    info = np.iinfo(dtype)
    return rng.integers(info.min, int(info.max) + 1, shape).astype(dtype)


def _scales(rng: np.random.Generator, *shape: int, dtype: Any = np.float32) -> np.ndarray:
    return (rng.random(shape) * 0.2 + 0.01).astype(dtype)


def _ties(rng: np.random.Generator, scale: float, n: int) -> np.ndarray:
    """Values whose quotient by ``scale`` is exactly k + 0.5 (round half to even decides them), big ones that
    saturate, and infinities."""
    halves = (rng.integers(-300, 300, n) + 0.5) * scale
    return np.concatenate([halves, rng.standard_normal(n) * 40 * scale, [np.inf, -np.inf, 1e30]]).astype(np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.uint16])
def test_quantize_per_tensor_rounds_half_to_even_and_saturates(backend: str, rng: np.random.Generator,
                                                               dtype: Any) -> None:
    x = _ties(rng, 0.25, 40)
    zero = np.array(_ints(rng, (), dtype) // 4, dtype=dtype)
    check_op("QuantizeLinear", {"x": x}, backend=backend, initializers={"s": np.float32(0.25), "z": zero}, opset=21)


@pytest.mark.parametrize("backend", BACKENDS)
def test_quantize_per_axis_blocked_and_float16(backend: str, rng: np.random.Generator) -> None:
    x = (rng.standard_normal((3, 4, 6)) * 10).astype(np.float32)
    check_op("QuantizeLinear", {"x": x, "s": _scales(rng, 4), "z": _ints(rng, (4,), np.int8)}, backend=backend,
             opset=13, axis=-2)
    blocked = {"x": x, "s": _scales(rng, 3, 4, 2), "z": _ints(rng, (3, 4, 2), np.uint8)}
    check_op("QuantizeLinear", blocked, backend=backend, opset=21, axis=2, block_size=4)
    # float16 and bfloat16 divide in their own precision (the scale's type, as the spec says; onnxruntime divides
    # in float32), so the reference is onnx's
    for half in (np.float16, ml_dtypes.bfloat16):
        feeds = {"x": (rng.standard_normal((4, 5)) * 10).astype(half), "s": _scales(rng, 5, dtype=half)}
        if half == ml_dtypes.bfloat16 and backend != "cpu":
            continue  # bfloat16 op cases are checked on the CPU only
        check_op("QuantizeLinear", feeds, backend=backend, opset=19, axis=1,
                 expected=_reference("QuantizeLinear", feeds, opset=19, axis=1))


def test_quantize_to_int4_and_float8(rng: np.random.Generator) -> None:
    x = (rng.standard_normal((4, 6)) * 3).astype(np.float32)
    kwargs: dict[str, Any] = {"initializers": {"s": _scales(rng, 4) * 5,
                                               "z": np.array([1, -2, 0, 3], dtype=ml_dtypes.int4)},
                              "opset": 21, "axis": 0}
    check_op("QuantizeLinear", {"x": x}, expected=_reference("QuantizeLinear", {"x": x}, **kwargs), **kwargs)
    big = np.concatenate([x.ravel() * 100, [1e6, -1e6, np.inf]]).astype(np.float32)
    for out, saturate in ((ml_dtypes.float8_e4m3fn, 1), (ml_dtypes.float8_e4m3fn, 0), (ml_dtypes.float8_e5m2, 0)):
        kwargs = {"initializers": {"s": np.float32(0.5), "z": np.zeros((), dtype=out)}, "opset": 21,
                  "saturate": saturate}
        check_op("QuantizeLinear", {"x": big}, expected=_reference("QuantizeLinear", {"x": big}, **kwargs), **kwargs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dequantize_granularities_and_output_dtype(backend: str, rng: np.random.Generator) -> None:
    x = _ints(rng, (2, 6, 3), np.int16)
    check_op("DequantizeLinear", {"x": x, "s": _scales(rng, 6), "z": _ints(rng, (6,), np.int16)}, backend=backend,
             opset=21, axis=1)
    blocked = {"x": _ints(rng, (2, 6, 3), np.uint8), "s": _scales(rng, 2, 2, 3), "z": _ints(rng, (2, 2, 3), np.uint8)}
    check_op("DequantizeLinear", blocked, backend=backend, opset=21, axis=1, block_size=3)
    check_op("DequantizeLinear", {"x": _ints(rng, (5,), np.int8)}, backend=backend, opset=23,
             initializers={"s": np.float32(0.3), "z": np.int8(-3)}, output_dtype=10)
    check_op("DequantizeLinear", {"x": _ints(rng, (5,), np.int32)}, backend=backend, opset=13,
             initializers={"s": np.float32(0.3)})


def test_dequantize_int4_and_float8(rng: np.random.Generator) -> None:
    x4 = {"x": rng.integers(-8, 8, (3, 4)).astype(ml_dtypes.int4)}
    kwargs: dict[str, Any] = {"initializers": {"s": _scales(rng, 3), "z": np.array([0, 1, -1], ml_dtypes.int4)},
                              "opset": 21, "axis": 0}
    check_op("DequantizeLinear", x4, expected=_reference("DequantizeLinear", x4, **kwargs), **kwargs)
    x8 = {"x": (rng.standard_normal(8) * 50).astype(ml_dtypes.float8_e4m3fn)}
    kwargs = {"initializers": {"s": np.float16(0.5)}, "opset": 21}
    check_op("DequantizeLinear", x8, expected=_reference("DequantizeLinear", x8, **kwargs), **kwargs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dynamic_quantize(backend: str, rng: np.random.Generator) -> None:
    for x in ((rng.standard_normal((3, 5)) * 4).astype(np.float32), rng.random(7).astype(np.float32) + 0.5):
        check_op("DynamicQuantizeLinear", {"x": x}, backend=backend, n_outputs=3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_matmul_integer(backend: str, rng: np.random.Generator) -> None:
    a, b = _ints(rng, (2, 3, 5), np.uint8), _ints(rng, (5, 4), np.int8)
    a_zero, b_zero = np.uint8(7), np.int8(-3)
    exact = (a.astype(np.int64) - a_zero) @ (b.astype(np.int64) - b_zero)
    check_op("MatMulInteger", {"a": a, "b": b}, backend=backend, initializers={"az": a_zero, "bz": b_zero},
             expected={"y": exact.astype(np.int32)})
    a2, b2 = _ints(rng, (4, 6), np.int8), _ints(rng, (6, 2), np.uint8)
    check_op("MatMulInteger", {"a": a2, "b": b2}, backend=backend,
             expected={"y": (a2.astype(np.int32) @ b2.astype(np.int32))})
    # per row (A, an [M] vector, as the spec says) and per column (B)
    a_rows, b_columns = _ints(rng, (3,), np.uint8), _ints(rng, (4,), np.int8)
    exact = (a.astype(np.int64) - a_rows[:, None]) @ (b.astype(np.int64) - b_columns)
    check_op("MatMulInteger", {"a": a, "b": b}, backend=backend, initializers={"az": a_rows, "bz": b_columns},
             expected={"y": exact.astype(np.int32)})


@pytest.mark.parametrize("backend", BACKENDS)
def test_conv_integer(backend: str, rng: np.random.Generator) -> None:
    feeds = {"x": _ints(rng, (1, 4, 6, 5), np.uint8), "w": _ints(rng, (6, 2, 3, 2), np.uint8)}
    kwargs: dict[str, Any] = {"group": 2, "pads": [1, 0, 1, 1], "strides": [2, 1]}
    check_op("ConvInteger", feeds, backend=backend, initializers={"xz": np.uint8(100), "wz": np.uint8(3)}, **kwargs)
    kwargs["initializers"] = {"xz": np.uint8(100), "wz": _ints(rng, (6,), np.uint8)}  # per output channel
    check_op("ConvInteger", feeds, backend=backend, expected=_reference("ConvInteger", feeds, **kwargs), **kwargs)
    check_op("ConvInteger", {"x": _ints(rng, (2, 3, 7), np.int8), "w": _ints(rng, (2, 3, 3), np.int8)},
             backend=backend, auto_pad="SAME_LOWER", strides=[2])
    check_op("ConvInteger", {"x": _ints(rng, (2, 3, 7), np.int8), "w": _ints(rng, (2, 3, 3), np.int8)},
             backend=backend, dilations=[2], pads=[2, 1])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("qtype", "stype", "opset"), [(np.uint8, np.float32, 10), (np.int8, np.float16, 21)])
def test_qlinear_matmul(backend: str, rng: np.random.Generator, qtype: Any, stype: Any, opset: int) -> None:
    a, b = _ints(rng, (2, 3, 8), qtype), _ints(rng, (8, 4), qtype)
    inits = {"as": _scales(rng, dtype=stype), "az": _ints(rng, (), qtype), "b": b,
             "bs": _scales(rng, 4, dtype=stype), "bz": _ints(rng, (4,), qtype),
             "ys": (_scales(rng) * 20).astype(stype), "yz": _ints(rng, (), qtype)}
    kwargs: dict[str, Any] = {"initializers": inits, "opset": opset,
                              "input_names": ["a", "as", "az", "b", "bs", "bz", "ys", "yz"]}
    expected = _reference("QLinearMatMul", {"a": a}, **kwargs) if stype == np.float16 else None
    check_op("QLinearMatMul", {"a": a}, backend=backend, expected=expected, **kwargs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_qlinear_conv_per_channel_with_bias(backend: str, rng: np.random.Generator) -> None:
    x, w = _ints(rng, (1, 3, 5, 5), np.uint8), _ints(rng, (4, 3, 3, 3), np.uint8)
    inits = {"xs": np.float32(0.02), "xz": np.uint8(128), "w": w, "ws": _scales(rng, 4) / 10,
             "wz": _ints(rng, (4,), np.uint8), "ys": np.float32(0.05), "yz": np.uint8(120),
             "bias": rng.integers(-2000, 2000, 4).astype(np.int32)}
    check_op("QLinearConv", {"x": x}, backend=backend, initializers=inits, pads=[1, 1, 1, 1],
             input_names=["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "bias"])
    # int8, per tensor, strided, no bias
    inits = {"xs": np.float32(0.03), "xz": np.int8(-5), "w": _ints(rng, (2, 3, 2, 2), np.int8),
             "ws": np.float32(0.004), "wz": np.int8(0), "ys": np.float32(0.1), "yz": np.int8(3)}
    check_op("QLinearConv", {"x": _ints(rng, (2, 3, 5, 4), np.int8)}, backend=backend, initializers=inits,
             strides=[2, 1], input_names=["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"])


def test_unsupported_quant_forms_are_typed_errors(rng: np.random.Generator) -> None:
    feeds = {"x": rng.standard_normal(4).astype(np.float32), "s": np.array(0.5, dtype=np.float16)}
    with pytest.raises(ReprobuildError, match=r"\(op QuantizeLinear\).*precision"):
        build_and_run(node_model("QuantizeLinear", feeds, opset=23), feeds)
    feeds = {"a": _ints(rng, (3, 4), np.uint8)}
    inits = {"as": _scales(rng, 3), "az": _ints(rng, (3,), np.uint8), "b": _ints(rng, (4, 2), np.uint8),
             "bs": _scales(rng), "bz": np.uint8(1), "ys": np.float32(1.0), "yz": np.uint8(2)}
    with pytest.raises(ReprobuildError, match=r"\(op QLinearMatMul\).*per row"):
        build_and_run(node_model("QLinearMatMul", feeds, initializers=inits,
                                 input_names=["a", "as", "az", "b", "bs", "bz", "ys", "yz"]), feeds)
    feeds = {"x": _ints(rng, (1, 2, 4, 4), np.uint8), "w": _ints(rng, (3, 2, 2, 2), np.uint8)}
    with pytest.raises(ReprobuildError, match=r"\(op ConvInteger\).*x_zero_point has shape \[2\]"):
        build_and_run(node_model("ConvInteger", feeds, initializers={"xz": _ints(rng, (2,), np.uint8)}), feeds)


def test_float8e8m0_scales(rng: np.random.Generator) -> None:
    scale = np.array([0.25, 4.0, 2.0**-20], dtype=ml_dtypes.float8_e8m0fnu)
    x = {"x": (rng.standard_normal((3, 4)) * 100).astype(np.float16)}
    kwargs: dict[str, Any] = {"initializers": {"s": scale, "z": np.zeros(3, np.int8)}, "opset": 25, "axis": 0}
    check_op("QuantizeLinear", x, expected=_reference("QuantizeLinear", x, **kwargs), **kwargs)
    q = {"x": _ints(rng, (3, 4), np.int8)}
    kwargs = {"initializers": {"s": scale}, "opset": 25, "axis": 0, "output_dtype": 10}
    check_op("DequantizeLinear", q, expected=_reference("DequantizeLinear", q, **kwargs), **kwargs)

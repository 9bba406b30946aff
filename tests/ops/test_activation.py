"""Activations (op_activation, _activation_clip) against onnxruntime, or against float64 formulas where
onnxruntime has no kernel (float64 inputs, SwiGLU)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from onnx import helper

from reprobuild.core.errors import ReprobuildError
from reprobuild.core.logger import Logger, Severity
from reprobuild.frontend import network_from_onnx_bytes
from tests.ops.util import BACKENDS, build_and_run
from tests.ops.util import check_op as _check_op
from tests.ops.util import node_model as _node_model

#: The opset of the test models unless a test names one: new enough for every op version tested here, and old
#: enough for the onnxruntime of the GPU host, which refuses the newest opset onnx knows.
OPSET = 22


def check_op(op: str, inputs: dict[str, np.ndarray], opset: int | None = None, **kwargs: Any) -> Any:
    return _check_op(op, inputs, opset=opset or OPSET, **kwargs)


def node_model(op: str, inputs: dict[str, np.ndarray], opset: int | None = None, **kwargs: Any) -> Any:
    return _node_model(op, inputs, opset=opset or OPSET, **kwargs)

#: (op, attributes, opset or None for OPSET)
UNARY: list[tuple[str, dict[str, Any], int | None]] = [
    ("Celu", {"alpha": 0.7}, 12),
    ("Elu", {"alpha": 0.3}, None),
    ("Gelu", {}, None),
    ("Gelu", {"approximate": "tanh"}, None),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, None),
    ("HardSwish", {}, None),
    ("LeakyRelu", {"alpha": 0.2}, None),
    ("Mish", {}, None),
    ("Relu", {}, None),
    ("Selu", {}, 7),
    ("Selu", {"alpha": 1.5, "gamma": 1.1}, None),
    ("Shrink", {"lambd": 0.7, "bias": 0.3}, None),
    ("Sigmoid", {}, 7),
    ("Softplus", {}, 7),
    ("Softsign", {}, None),
    ("Swish", {"alpha": 0.8}, 24),
    ("ThresholdedRelu", {"alpha": 0.4}, None),
]


def _input(rng: np.random.Generator, dtype: Any, shape: tuple[int, ...] = (3, 4, 5)) -> np.ndarray:
    return (rng.standard_normal(shape) * 3).astype(dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("op", "attrs", "opset"), UNARY, ids=[f"{o}-{i}" for i, (o, _, _) in enumerate(UNARY)])
def test_unary_float32_and_float16(backend: str, rng: np.random.Generator, op: str, attrs: dict[str, Any],
                                   opset: int | None) -> None:
    check_op(op, {"x": _input(rng, np.float32)}, backend=backend, opset=opset, **attrs)
    # onnxruntime computes some float16 activations in float16 (we round once from float32): a few ulps apart
    if op != "Celu":  # Celu takes float16 from opset 28 (below)
        check_op(op, {"x": _input(rng, np.float16)}, backend=backend, opset=opset, rtol=4e-3, atol=2e-3, **attrs)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


FLOAT64: dict[str, tuple[dict[str, Any], Any]] = {
    "Celu": ({"alpha": 1.5}, lambda x: np.maximum(x, 0) + np.minimum(1.5 * (np.exp(x / 1.5) - 1), 0)),
    "Elu": ({"alpha": 0.5}, lambda x: np.where(x < 0, 0.5 * (np.exp(x) - 1), x)),
    "HardSwish": ({}, lambda x: x * np.clip(x / 6 + 0.5, 0, 1)),
    "LeakyRelu": ({"alpha": 0.25}, lambda x: np.where(x < 0, 0.25 * x, x)),
    "Mish": ({}, lambda x: x * np.tanh(np.log1p(np.exp(x)))),
    "Softplus": ({}, lambda x: np.log1p(np.exp(x))),
    "Swish": ({"alpha": 0.5}, lambda x: x * _sigmoid(0.5 * x)),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", sorted(FLOAT64))
def test_unary_float64_and_float16_against_formulas(backend: str, rng: np.random.Generator, op: str) -> None:
    attrs, formula = FLOAT64[op]
    x = _input(rng, np.float64)
    opset = {"Celu": 28, "Swish": 24}.get(op)
    check_op(op, {"x": x}, backend=backend, opset=opset, expected={"y": formula(x)}, rtol=1e-12, atol=1e-14, **attrs)
    x16 = _input(rng, np.float16)
    check_op(op, {"x": x16}, backend=backend, opset=opset, expected={"y": formula(x16.astype(np.float64)).astype(
        np.float16)}, rtol=1e-3, atol=1e-3, **attrs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigmoid_and_softplus_saturate_without_overflow(backend: str) -> None:
    x = np.array([-1000.0, -100.0, -20.0, 0.0, 20.0, 100.0, 1000.0, np.inf, -np.inf], dtype=np.float32)
    with np.errstate(over="ignore"):
        want = _sigmoid(x.astype(np.float64)).astype(np.float32)
    check_op("Sigmoid", {"x": x}, backend=backend, expected={"y": want})
    want = np.where(x > 30, x, np.log1p(np.exp(np.minimum(x, 30).astype(np.float64)))).astype(np.float32)
    check_op("Softplus", {"x": x}, backend=backend, expected={"y": want})


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.int8])
@pytest.mark.parametrize(("lambd", "bias"), [(1.5, 0.5), (1.0, 3.0), (0.5, -2.0), (2.0, 0.0), (0.25, -2.5)])
def test_shrink_on_integers_truncates_and_wraps_like_onnxruntime(backend: str, rng: np.random.Generator, dtype: Any,
                                                                 lambd: float, bias: float) -> None:
    # onnxruntime computes in float32: exact for the 8-bit types, and for int32 below 2**24
    low, high = (-(2**20), 2**20) if dtype == np.int32 else (np.iinfo(dtype).min, np.iinfo(dtype).max)
    x = rng.integers(low, high + 1, (4, 6)).astype(dtype)
    x.flat[:4] = [low, high, 0, 2]
    check_op("Shrink", {"x": x}, backend=backend, lambd=lambd, bias=bias)


@pytest.mark.parametrize("backend", BACKENDS)
def test_shrink_on_int64_is_exact_beyond_float_precision(backend: str) -> None:
    x = np.array([2**62 + 1, -(2**62) - 1, 3, -3, 1, 0], dtype=np.int64)
    want = np.array([2**62 - 1, -(2**62) + 1, 1, -1, 0, 0], dtype=np.int64)  # trunc(x -/+ 1.5)
    check_op("Shrink", {"x": x}, backend=backend, lambd=1.0, bias=1.5, expected={"y": want})


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("form", ["attrs", "constants", "inputs", "max-only-input", "min-only", "none"])
def test_clip_forms(backend: str, rng: np.random.Generator, form: str) -> None:
    x = _input(rng, np.float32)
    lo, hi = np.array(-1.25, np.float32), np.array(0.75, np.float32)
    if form == "attrs":
        check_op("Clip", {"x": x}, backend=backend, opset=6, min=-1.25, max=0.75)
    elif form == "constants":
        check_op("Clip", {"x": x}, backend=backend, initializers={"lo": lo, "hi": hi})
    elif form == "inputs":
        check_op("Clip", {"x": x, "lo": lo, "hi": hi}, backend=backend)
    elif form == "max-only-input":
        check_op("Clip", {"x": x, "hi": hi}, backend=backend, input_names=["x", "", "hi"])
    elif form == "min-only":
        check_op("Clip", {"x": x}, backend=backend, initializers={"lo": lo})
    else:
        check_op("Clip", {"x": x}, backend=backend, opset=6)
        check_op("Clip", {"x": x}, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_clip_integers_float16_and_min_above_max(backend: str, rng: np.random.Generator) -> None:
    xi = rng.integers(-1000, 1000, (3, 7)).astype(np.int32)
    check_op("Clip", {"x": xi, "lo": np.array(-10, np.int32)}, backend=backend,
             initializers={"hi": np.array(500, np.int32)})
    xu = rng.integers(0, 256, (3, 7)).astype(np.uint8)
    check_op("Clip", {"x": xu}, backend=backend, initializers={"hi": np.array(200, np.uint8)},
             input_names=["x", "", "hi"])
    xh = _input(rng, np.float16)
    check_op("Clip", {"x": xh}, backend=backend, initializers={"lo": np.array(-0.5, np.float16),
                                                               "hi": np.array(2.0, np.float16)})
    check_op("Clip", {"x": _input(rng, np.float32)}, backend=backend,
             initializers={"lo": np.array(2, np.float32), "hi": np.array(1, np.float32)})


def _layer_attrs(model: Any) -> tuple[Any, ...]:
    network, _ = network_from_onnx_bytes(model.SerializeToString(), Logger(Severity.ERROR))
    (layer,) = network.layers
    return tuple(layer.attrs)


def test_clip_attributes_and_constant_inputs_give_one_canonical_layer(rng: np.random.Generator) -> None:
    x = _input(rng, np.float32)
    old = node_model("Clip", {"x": x}, opset=6, min=-0.1, max=0.3)
    new = node_model("Clip", {"x": x}, initializers={"lo": np.array(-0.1, np.float32),
                                                     "hi": np.array(0.3, np.float32)})
    assert _layer_attrs(old) == _layer_attrs(new)
    unbounded = node_model("Clip", {"x": x}, initializers={"lo": np.array(-np.inf, np.float32)})
    assert _layer_attrs(unbounded) == _layer_attrs(node_model("Clip", {"x": x}))


@pytest.mark.parametrize("backend", BACKENDS)
def test_prelu_slope_broadcasts_to_the_input(backend: str, rng: np.random.Generator) -> None:
    x = _input(rng, np.float32, (2, 3, 4))
    check_op("PRelu", {"x": x}, backend=backend, initializers={"slope": rng.standard_normal(4).astype(np.float32)})
    check_op("PRelu", {"x": x, "slope": rng.standard_normal((3, 1)).astype(np.float32)}, backend=backend)
    check_op("PRelu", {"x": _input(rng, np.float16, (2, 3, 4))}, backend=backend,
             initializers={"slope": rng.standard_normal((1, 3, 1)).astype(np.float16)}, rtol=1e-3, atol=1e-3)
    xi = rng.integers(-50, 50, (2, 3, 4)).astype(np.int32)
    slope = rng.integers(-4, 5, (4,)).astype(np.int32)  # onnxruntime has no integer PRelu
    check_op("PRelu", {"x": xi}, backend=backend, initializers={"slope": slope},
             expected={"y": np.where(xi < 0, xi * slope, xi)})


@pytest.mark.parametrize("backend", BACKENDS)
def test_prelu_in_an_opset_7_model_keeps_the_old_per_channel_slope(backend: str, rng: np.random.Generator) -> None:
    """onnx.version_converter upgrades opset-6 PRelu to 7 without reshaping a per-channel slope [C]."""
    x, slope = _input(rng, np.float32, (2, 3, 4)), rng.standard_normal(3).astype(np.float32)
    want = np.where(x < 0, x * slope.reshape(3, 1), x)
    check_op("PRelu", {"x": x, "slope": slope}, backend=backend, opset=7, expected={"y": want})
    with pytest.raises(ReprobuildError, match=r"PRelu_0.*does not broadcast"):
        build_and_run(node_model("PRelu", {"x": x, "slope": slope}, opset=9), {"x": x, "slope": slope}, backend)
    square = _input(rng, np.float32, (2, 3, 3))
    with pytest.raises(ReprobuildError, match=r"PRelu_0.*ambiguous"):
        build_and_run(node_model("PRelu", {"x": square, "slope": slope}, opset=7), {"x": square, "slope": slope},
                      backend)


def _swiglu(a: np.ndarray, b: np.ndarray, alpha: float) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return (a64 * _sigmoid(alpha * a64) * b64).astype(a.dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("dtype", "alpha"), [(np.float32, 1.0), (np.float32, 1.702), (np.float16, 0.5)])
def test_swiglu(backend: str, rng: np.random.Generator, dtype: Any, alpha: float) -> None:
    a, b = _input(rng, dtype), _input(rng, dtype)
    tol = 1e-3 if dtype == np.float16 else 1e-6
    check_op("SwiGLU", {"a": a, "b": b}, backend=backend, opset=28, expected={"y": _swiglu(a, b, alpha)}, rtol=tol,
             atol=tol, alpha=alpha)


@pytest.mark.parametrize(("op", "inputs", "initializers", "attrs", "message"), [
    ("Gelu", {"x": np.ones((2, 3), np.float32)}, {}, {"approximate": "exact"}, "approximate"),
    ("Celu", {"x": np.ones((2, 3), np.float32)}, {}, {"alpha": 0.0}, "alpha = 0"),
    ("Clip", {"x": np.ones((2, 3), np.float32)}, {"lo": np.array(np.nan, np.float32)}, {}, "NaN"),
    ("Clip", {"x": np.ones((2, 3), np.float32)}, {"lo": np.zeros(2, np.float32)}, {}, "scalars"),
    ("PRelu", {"x": np.ones((2, 3), np.float32)}, {"slope": np.ones((4, 2, 3), np.float32)}, {}, "broadcast"),
    ("SwiGLU", {"a": np.ones((2, 3), np.float32), "b": np.ones((1, 3), np.float32)}, {}, {}, "same shape"),
    ("Shrink", {"x": np.ones((2, 3), np.int32)}, {}, {"bias": 1e17}, "2\\*\\*53"),
])
def test_unsupported_forms_are_typed_errors_naming_node_and_op(op: str, inputs: dict[str, np.ndarray],
                                                               initializers: dict[str, np.ndarray],
                                                               attrs: dict[str, Any], message: str) -> None:
    model = node_model(op, inputs, initializers=initializers, opset=28, **attrs)
    first = next(iter(inputs.values()))
    declared = helper.make_tensor_value_info("y", helper.np_dtype_to_tensor_dtype(first.dtype), list(first.shape))
    model.graph.output[0].CopyFrom(declared)  # onnx cannot infer the output of an invalid node
    with pytest.raises(ReprobuildError, match=rf"{op}_0.*{op}.*{message}|{op}.*{op}_0.*{message}"):
        build_and_run(model, inputs)

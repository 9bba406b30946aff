"""Normalizations (op_norm, _norm_scale) against onnxruntime, or against float64 formulas where onnxruntime has
no kernel or cannot type the model (GroupNormalization on float16, LRN beyond 4-D, float64 inputs)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from onnx import helper

from reprobuild.core.errors import ReprobuildError
from reprobuild.ops import TensorType, get_op
from tests.ops.util import BACKENDS, build_and_run, ort_outputs
from tests.ops.util import check_op as _check_op
from tests.ops.util import node_model as _node_model

#: The opset of the test models unless a test names one: new enough for every op version tested here, and old
#: enough for the onnxruntime of the GPU host, which refuses the newest opset onnx knows.
OPSET = 22


def check_op(op: str, inputs: dict[str, np.ndarray], opset: int | None = None, **kwargs: Any) -> Any:
    return _check_op(op, inputs, opset=opset or OPSET, **kwargs)


def node_model(op: str, inputs: dict[str, np.ndarray], opset: int | None = None, **kwargs: Any) -> Any:
    return _node_model(op, inputs, opset=opset or OPSET, **kwargs)


def _normal(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    return (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)


def _declare_output_like(model: Any, x: np.ndarray, name: str = "y") -> Any:
    """Declare output ``name`` with x's dtype and shape: onnx's shape inference cannot type GroupNormalization and
    MeanVarianceNormalization (function ops) in every form, and the ONNX checker needs the output typed."""
    declared = helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(x.dtype), list(x.shape))
    for out in model.graph.output:
        if out.name == name:
            out.CopyFrom(declared)
    return model


def _check_declared(op: str, feeds: dict[str, np.ndarray], backend: str, expected: dict[str, np.ndarray] | None = None,
                    rtol: float = 1e-5, atol: float = 1e-6, opset: int | None = None,
                    initializers: dict[str, np.ndarray] | None = None, **attrs: Any) -> None:
    """check_op for ops whose one output has the first input's dtype and shape."""
    model = _declare_output_like(node_model(op, feeds, initializers=initializers, opset=opset, **attrs),
                                 next(iter(feeds.values())))
    want = expected if expected is not None else ort_outputs(model, feeds)
    got = build_and_run(model, feeds, backend)
    for name, ref in want.items():
        assert got[name].dtype == ref.dtype and got[name].shape == ref.shape
        np.testing.assert_allclose(got[name].astype(np.float64), ref.astype(np.float64), rtol=rtol, atol=atol)


def _standardize(x: np.ndarray, axes: tuple[int, ...], epsilon: float) -> np.ndarray:
    x = x.astype(np.float64)
    mean = x.mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(x.var(axis=axes, keepdims=True) + epsilon)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("axis", "bias"), [(-1, True), (1, True), (0, False), (-2, False)])
def test_layer_normalization_all_outputs(backend: str, rng: np.random.Generator, axis: int, bias: bool) -> None:
    x = _normal(rng, (2, 3, 4))
    normalized = x.shape[axis:]
    inits = {"scale": _normal(rng, normalized)}
    if bias:
        inits["bias"] = _normal(rng, normalized)
    check_op("LayerNormalization", {"x": x}, backend=backend, n_outputs=3, initializers=inits, axis=axis,
             epsilon=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_normalization_float16_float64_and_broadcast_scale(backend: str, rng: np.random.Generator) -> None:
    x16 = _normal(rng, (3, 2, 8), np.float16)
    check_op("LayerNormalization", {"x": x16, "scale": _normal(rng, (8,), np.float16)}, backend=backend, n_outputs=3,
             initializers={"bias": _normal(rng, (8,), np.float16)}, rtol=2e-3, atol=2e-3)
    x64 = _normal(rng, (3, 2, 8), np.float64)
    check_op("LayerNormalization", {"x": x64}, backend=backend, n_outputs=3, axis=1,
             initializers={"scale": _normal(rng, (1, 8), np.float64), "bias": _normal(rng, (8,), np.float64)})
    # only Y: a one-output layer, as the layer-norm fusion pass builds
    check_op("LayerNormalization", {"x": _normal(rng, (4, 6))}, backend=backend,
             initializers={"scale": _normal(rng, (6,)), "bias": _normal(rng, (6,))})


@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_normalization_stash_type_double(backend: str, rng: np.random.Generator) -> None:
    """onnxruntime has no kernel for stash_type 11: statistics in float64, Mean and InvStdDev as float64."""
    x, scale = _normal(rng, (3, 5)), _normal(rng, (5,))
    x64 = x.astype(np.float64)
    mean, var = x64.mean(axis=1, keepdims=True), x64.var(axis=1, keepdims=True)
    want = {"y0": ((x64 - mean) / np.sqrt(var + 1e-3) * scale).astype(np.float32), "y1": mean,
            "y2": 1 / np.sqrt(var + 1e-3)}
    check_op("LayerNormalization", {"x": x}, backend=backend, n_outputs=3, initializers={"scale": scale},
             expected=want, stash_type=11, epsilon=1e-3, rtol=1e-6, atol=1e-6)


def test_layer_normalization_layer_from_the_fusion_pass_computes_one_output(rng: np.random.Generator) -> None:
    opdef = get_op("LayerNormalization")
    attrs = {"axis": 1, "epsilon": 1e-5, "stash_type": 1}
    x, gamma, beta = _normal(rng, (2, 5)), _normal(rng, (5,)), _normal(rng, (5,))
    types = opdef.infer(attrs, [TensorType(a.shape, "float32") for a in (x, gamma, beta)])
    assert types[0] == TensorType((2, 5), "float32")
    y = opdef.compute(np, attrs, x, gamma, beta)[0]
    np.testing.assert_allclose(y, _standardize(x, (1,), 1e-5) * gamma + beta, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_group_normalization(backend: str, rng: np.random.Generator) -> None:
    x = _normal(rng, (2, 6, 3, 2))
    _check_declared("GroupNormalization", {"x": x}, backend, num_groups=3, epsilon=1e-4,
                    initializers={"scale": _normal(rng, (6,)), "bias": _normal(rng, (6,))}, rtol=1e-4, atol=1e-5)


class _Node:
    """Just enough of reprobuild.ops.Node to convert a GroupNormalization node of a given version."""

    def __init__(self, version: int, x: np.ndarray, attrs: dict[str, Any]) -> None:
        self.version, self.x, self.attrs = version, x, attrs
        self.emitted: dict[str, Any] = {}

    def input(self, i: int) -> TensorType:
        return TensorType(self.x.shape, "float32")

    def attr(self, key: str) -> Any:
        return self.attrs.get(key, get_op("GroupNormalization").attributes[key].default)

    def emit(self, attrs: dict[str, Any], **kwargs: Any) -> None:
        self.emitted = attrs


def test_group_normalization_18_scales_per_group_like_onnxruntime(rng: np.random.Generator) -> None:
    """The ONNX checker rejects opset 18-20 GroupNormalization (deprecated for its per-group scale), so the
    frontend never converts one; the definition still gives version 18 its meaning, as onnxruntime does."""
    x, scale, bias = _normal(rng, (2, 6, 3, 2)), _normal(rng, (3,)), _normal(rng, (3,))
    opdef = get_op("GroupNormalization")
    node = _Node(18, x, {"num_groups": 3})
    opdef.convert(node)  # type: ignore[arg-type]
    assert node.emitted == {"epsilon": opdef.attributes["epsilon"].default, "num_groups": 3, "per_group": 1,
                            "stash_type": 1}
    model = _declare_output_like(node_model("GroupNormalization", {"x": x}, initializers={"s": scale, "b": bias},
                                            opset=18, num_groups=3), x)
    want = ort_outputs(model, {"x": x})["y"]
    np.testing.assert_allclose(opdef.compute(np, node.emitted, x, scale, bias)[0], want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ReprobuildError, match="deprecated"):
        build_and_run(model, {"x": x})


@pytest.mark.parametrize("backend", BACKENDS)
def test_group_normalization_float16_against_a_formula(backend: str, rng: np.random.Generator) -> None:
    x, scale, bias = _normal(rng, (2, 4, 5), np.float16), _normal(rng, (4,), np.float16), _normal(rng, (4,), np.float16)
    grouped = _standardize(x.reshape(2, 2, 10), (2,), 1e-5).reshape(x.shape)
    want = (grouped * scale.reshape(1, 4, 1) + bias.reshape(1, 4, 1)).astype(np.float16)
    _check_declared("GroupNormalization", {"x": x, "scale": scale, "bias": bias}, backend, expected={"y": want},
                    rtol=2e-3, atol=2e-3, num_groups=2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_instance_normalization(backend: str, rng: np.random.Generator) -> None:
    for shape, dtype, tol in (((2, 3, 7), np.float32, 1e-5), ((2, 3, 4, 5), np.float16, 2e-3)):
        check_op("InstanceNormalization", {"x": _normal(rng, shape, dtype)}, backend=backend, epsilon=1e-3,
                 initializers={"scale": _normal(rng, (3,), dtype), "bias": _normal(rng, (3,), dtype)}, rtol=tol,
                 atol=tol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("axis", "dtype"), [(-1, np.float32), (1, np.float32), (0, np.float64), (2, np.float16)])
def test_rms_normalization(backend: str, rng: np.random.Generator, axis: int, dtype: Any) -> None:
    x = _normal(rng, (2, 3, 4), dtype)
    tol = 2e-3 if dtype == np.float16 else 1e-5
    check_op("RMSNormalization", {"x": x, "scale": _normal(rng, x.shape[axis:], dtype)}, backend=backend, opset=23,
             axis=axis, epsilon=1e-4, rtol=tol, atol=tol)


def _lrn(x: np.ndarray, size: int, alpha: float, beta: float, bias: float) -> np.ndarray:
    x64, channels = x.astype(np.float64), x.shape[1]
    sums = np.zeros_like(x64)
    for c in range(channels):
        lo, hi = max(0, c - (size - 1) // 2), min(channels, c + (size - 1) - (size - 1) // 2 + 1)
        sums[:, c] = (x64[:, lo:hi] ** 2).sum(axis=1)
    return (x64 / (bias + alpha / size * sums) ** beta).astype(x.dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size", [1, 3, 4])
def test_lrn(backend: str, rng: np.random.Generator, size: int) -> None:
    x = _normal(rng, (2, 6, 3, 3))
    # onnxruntime takes only odd sizes
    reference: dict[str, Any] = {"expected": {"y": _lrn(x, size, 0.01, 0.6, 1.5)}} if size % 2 == 0 else {}
    check_op("LRN", {"x": x}, backend=backend, size=size, alpha=0.01, beta=0.6, bias=1.5, **reference)
    x3 = _normal(rng, (2, 6, 5))  # onnxruntime takes only 4-D input
    check_op("LRN", {"x": x3}, backend=backend, size=size, alpha=0.01, beta=0.6, bias=1.5,
             expected={"y": _lrn(x3, size, 0.01, 0.6, 1.5)})
    x16 = _normal(rng, (1, 5, 2, 2), np.float16)
    reference = {"expected": {"y": _lrn(x16, size, 1e-4, 0.75, 1.0)}} if size % 2 == 0 else {}
    check_op("LRN", {"x": x16}, backend=backend, size=size, rtol=2e-3, atol=2e-3, **reference)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("p", "axis", "opset"), [(1, 0, None), (2, 1, None), (2, -1, 21), (1, -1, 21)])
def test_lp_normalization(backend: str, rng: np.random.Generator, p: int, axis: int, opset: int | None) -> None:
    x = _normal(rng, (3, 4, 5))
    x[1, :, 2] = 0.0  # a zero vector along axis 1 gives zeros
    check_op("LpNormalization", {"x": x}, backend=backend, opset=opset, p=p, axis=axis)
    check_op("LpNormalization", {"x": _normal(rng, (3, 4), np.float16)}, backend=backend, p=p, axis=axis % 2,
             rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lp_normalization_of_tiny_and_huge_float32_vectors(backend: str) -> None:
    x = np.array([[3e-30, 4e-30], [3e30, -4e30], [0.0, 0.0]], dtype=np.float32)
    want = np.array([[0.6, 0.8], [0.6, -0.8], [0.0, 0.0]], dtype=np.float32)
    check_op("LpNormalization", {"x": x}, backend=backend, expected={"y": want})


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("axes", [None, (1,), (-1, 0)])
def test_mean_variance_normalization(backend: str, rng: np.random.Generator, axes: tuple[int, ...] | None) -> None:
    attrs: dict[str, Any] = {} if axes is None else {"axes": list(axes)}
    x = _normal(rng, (3, 2, 4, 2))
    _check_declared("MeanVarianceNormalization", {"x": x}, backend, rtol=1e-4, atol=1e-5, **attrs)
    x16 = _normal(rng, (3, 2, 4, 2), np.float16)
    _check_declared("MeanVarianceNormalization", {"x": x16}, backend, rtol=2e-3, atol=2e-3, **attrs)


def test_mean_variance_normalization_float64_against_a_formula(rng: np.random.Generator) -> None:
    x = _normal(rng, (3, 2, 4, 2), np.float64)
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    want = (x - mean) / (np.sqrt(((x - mean) ** 2).mean(axis=(0, 2, 3), keepdims=True)) + 1e-9)
    _check_declared("MeanVarianceNormalization", {"x": x}, "cpu", expected={"y": want}, rtol=1e-12, atol=1e-12)


_X = np.ones((2, 4, 3), np.float32)


@pytest.mark.parametrize(("op", "initializers", "attrs", "outputs", "message"), [
    ("LayerNormalization", {"s": np.ones(3, np.float32)}, {"stash_type": 16}, None, "stash_type"),
    ("LayerNormalization", {"s": np.ones(3, np.float32)}, {}, ["y", "", "inv"], "Mean is omitted"),
    ("LayerNormalization", {"s": np.ones(5, np.float32)}, {}, None, "broadcast"),
    ("GroupNormalization", {"s": np.ones(4, np.float32), "b": np.ones(4, np.float32)}, {"num_groups": 3}, None,
     "divide"),
    ("LpNormalization", {}, {"p": 3}, None, "p = 1 and p = 2"),
    ("MeanVarianceNormalization", {}, {"axes": [0, 3]}, None, "out of range"),
    ("LRN", {}, {"size": 0}, None, "at least one"),
])
def test_unsupported_forms_are_typed_errors_naming_node_and_op(op: str, initializers: dict[str, np.ndarray],
                                                               attrs: dict[str, Any], outputs: list[str] | None,
                                                               message: str) -> None:
    model = node_model(op, {"x": _X}, n_outputs=len(outputs or ["y"]), initializers=initializers,
                       output_names=outputs, **attrs)
    declared = [helper.make_tensor_value_info(o, helper.np_dtype_to_tensor_dtype(_X.dtype), [2, 4, 3]) for o in
                outputs or ["y"] if o]
    del model.graph.output[:]
    model.graph.output.extend(declared)
    with pytest.raises(ReprobuildError, match=rf"{op}_0.*\(op {op}\).*{message}"):
        build_and_run(model, {"x": _X})

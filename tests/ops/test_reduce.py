"""Reductions and arg-reductions (op_reduce) against onnxruntime, or against explicit values where onnxruntime has
no kernel (unsigned and bfloat16 inputs) or leaves the answer open (reductions of an empty set)."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import pytest
from onnx import helper

from reprobuild.core.errors import ReprobuildError
from reprobuild.core.logger import Logger, Severity
from reprobuild.frontend import network_from_onnx_bytes
from reprobuild.ops import StaticInputError
from tests.ops.util import BACKENDS, build_and_run, check_op, node_model, ort_outputs

REDUCTIONS = ["ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
              "ReduceProd", "ReduceSum", "ReduceSumSquare"]
#: The ones that do elementwise work besides reducing, which noop_with_empty_axes=1 keeps.
COMPOSITE = ["ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"]


def _data(rng: np.random.Generator, op: str, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    """Random values that suit the op: positive for ReduceLogSum (its log needs a positive sum), near 1 for
    ReduceProd (no overflow or underflow), signed elsewhere."""
    if op == "ReduceLogSum":
        return rng.uniform(0.1, 2.0, shape).astype(dtype)
    if op == "ReduceProd":
        return (rng.uniform(0.5, 1.5, shape) * rng.choice([-1, 1], shape)).astype(dtype)
    return (rng.standard_normal(shape) * 2).astype(dtype)


def _declared(model: Any, shape: tuple[int, ...], dtype: Any) -> Any:
    """Declare output y's shape: onnx cannot infer it when axes is a network input, and its checker needs it."""
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", helper.np_dtype_to_tensor_dtype(np.dtype(dtype)),
                                                                 list(shape)))
    return model


def _layers(model: Any, values: dict[str, np.ndarray] | None = None) -> list[Any]:
    network, _ = network_from_onnx_bytes(model.SerializeToString(), Logger(Severity.ERROR), input_values=values)
    return list(network.layers)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", REDUCTIONS)
def test_reduction_axes_forms(backend: str, rng: np.random.Generator, op: str) -> None:
    x = _data(rng, op, (3, 4, 5))
    axes = np.array([-1, 0], dtype=np.int64)
    # axes as a constant input (opset 18), keepdims=0; then reduce-all (no axes); then the attribute (opset 11)
    check_op(op, {"x": x}, backend=backend, opset=18, initializers={"axes": axes}, keepdims=0, rtol=1e-5)
    check_op(op, {"x": x}, backend=backend, opset=18, rtol=1e-5)
    check_op(op, {"x": x}, backend=backend, opset=11, axes=[1], rtol=1e-5)
    # axes as a network input pinned at build time (a shape input)
    feeds = {"x": x, "axes": np.array([1, 2], np.int64)}
    model = _declared(node_model(op, feeds, opset=18, keepdims=0), (3,), np.float32)
    got = build_and_run(model, feeds, backend, input_values={"axes": feeds["axes"]})["y"]
    np.testing.assert_allclose(got, ort_outputs(model, feeds)["y"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_integer_reductions(backend: str, rng: np.random.Generator, dtype: Any) -> None:
    x = rng.integers(-20, 20, (4, 3, 5)).astype(dtype)
    axes = {"axes": np.array([1, 2], np.int64)}
    for op in ["ReduceL1", "ReduceL2", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum", "ReduceSumSquare"]:
        check_op(op, {"x": x}, backend=backend, opset=18, initializers=axes)
    check_op("ReduceProd", {"x": rng.integers(-4, 5, (4, 3, 5)).astype(dtype)}, backend=backend, opset=18,
             initializers=axes)
    # integer means round toward zero: -7/2 -> -3, 7/2 -> 3, -9/4 -> -2
    check_op("ReduceMean", {"x": np.array([[-7, 0, 0, 0], [7, 0, 0, 0], [-9, 0, 0, 0]], dtype)}, backend=backend,
             opset=18, initializers={"axes": np.array([1], np.int64)})


@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_integer_mean_and_unsigned_sums(backend: str, rng: np.random.Generator) -> None:
    big = np.iinfo(np.int32).max
    x = np.array([[big, big, big, 5], [-7, 0, 0, 0]], np.int32)  # the sum overflows int32; the mean does not
    check_op("ReduceMean", {"x": x}, backend=backend, opset=18, initializers={"axes": np.array([1], np.int64)})
    u = rng.integers(0, 2**32, (3, 6), dtype=np.uint64).astype(np.uint32)
    want = {"y": (u.astype(np.uint64).sum(axis=1) % 2**32).astype(np.uint32)}
    check_op("ReduceSum", {"x": u}, backend=backend, opset=18, initializers={"axes": np.array([1], np.int64)},
             keepdims=0, expected=want)
    check_op("ReduceMean", {"x": u}, backend=backend, opset=18, keepdims=0,
             expected={"y": np.array(u.astype(np.uint64).sum() // u.size, np.uint32)})


@pytest.mark.parametrize("backend", BACKENDS)
def test_half_precision(backend: str, rng: np.random.Generator) -> None:
    for op in REDUCTIONS:
        x = _data(rng, op, (3, 8), np.float16)
        check_op(op, {"x": x}, backend=backend, opset=18, initializers={"axes": np.array([1], np.int64)},
                 rtol=5e-3, atol=5e-3)


def test_bfloat16_on_the_cpu(rng: np.random.Generator) -> None:
    """onnxruntime has no bfloat16 reductions: float32 results rounded once are the reference."""
    bf16 = ml_dtypes.bfloat16
    x = rng.standard_normal((3, 8)).astype(bf16)
    wide = x.astype(np.float32)
    axes = {"axes": np.array([1], np.int64)}
    check_op("ReduceSum", {"x": x}, opset=18, initializers=axes, expected={"y": wide.sum(1, keepdims=True)
                                                                           .astype(bf16)})
    check_op("ReduceMax", {"x": x}, opset=18, initializers=axes, expected={"y": wide.max(1, keepdims=True)
                                                                           .astype(bf16)})


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_min_of_bytes_and_bools(backend: str, rng: np.random.Generator) -> None:
    axes = {"axes": np.array([0], np.int64)}
    for x in (rng.integers(-100, 100, (4, 5)).astype(np.int8), rng.integers(0, 255, (4, 5)).astype(np.uint8),
              rng.random((4, 5)) < 0.5):
        for op in ("ReduceMax", "ReduceMin"):
            check_op(op, {"x": x}, backend=backend, opset=20, initializers=axes)


@pytest.mark.parametrize("backend", BACKENDS)
def test_reductions_of_an_empty_set(backend: str) -> None:
    x = np.zeros((2, 0, 3), np.float32)
    axes = {"axes": np.array([1], np.int64)}
    identity = {"ReduceL1": 0.0, "ReduceL2": 0.0, "ReduceLogSum": -np.inf, "ReduceLogSumExp": -np.inf,
                "ReduceMax": -np.inf, "ReduceMean": np.nan, "ReduceMin": np.inf, "ReduceProd": 1.0, "ReduceSum": 0.0,
                "ReduceSumSquare": 0.0}
    for op, value in identity.items():
        check_op(op, {"x": x}, backend=backend, opset=18, initializers=axes,
                 expected={"y": np.full((2, 1, 3), value, np.float32)})
    xi = np.zeros((2, 0), np.int32)
    check_op("ReduceMax", {"x": xi}, backend=backend, opset=18, keepdims=0,
             expected={"y": np.array(np.iinfo(np.int32).min, np.int32)})
    check_op("ReduceMin", {"x": np.zeros((0, 3), bool)}, backend=backend, opset=20, initializers={"axes": axes["axes"]
             - 1}, expected={"y": np.ones((1, 3), bool)})
    # a non-reduced axis of size 0 gives an empty result
    check_op("ReduceSum", {"x": x}, backend=backend, opset=18, initializers={"axes": np.array([2], np.int64)},
             expected={"y": np.zeros((2, 0, 1), np.float32)})


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", REDUCTIONS)
def test_noop_with_empty_axes(backend: str, rng: np.random.Generator, op: str) -> None:
    """No axes and noop_with_empty_axes=1: the plain reductions are an Identity layer, the composite ones keep
    their elementwise steps (an empty axes input means the same as none)."""
    x = _data(rng, op, (3, 4))
    model = node_model(op, {"x": x}, opset=18, noop_with_empty_axes=1)
    assert [layer.op for layer in _layers(model)] == [op if op in COMPOSITE else "Identity"]
    check_op(op, {"x": x}, backend=backend, opset=18, noop_with_empty_axes=1)
    check_op(op, {"x": x}, backend=backend, opset=18, initializers={"axes": np.zeros(0, np.int64)},
             noop_with_empty_axes=1)


def test_canonical_axes_are_sorted_explicit_and_version_independent(rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    as_attribute = node_model("ReduceMean", {"x": x}, opset=13, axes=[-1, 0])
    as_input = node_model("ReduceMean", {"x": x}, opset=18, initializers={"axes": np.array([2, -3], np.int64)})
    for model in (as_attribute, as_input):
        (layer,) = _layers(model)
        assert dict(layer.attrs) == {"axes": (0, 2), "keepdims": 1}
    everything = node_model("ReduceSum", {"x": x}, opset=13, keepdims=0)
    (layer,) = _layers(everything)
    assert dict(layer.attrs) == {"axes": (0, 1, 2), "keepdims": 0}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize(("keepdims", "last"), [(1, 0), (0, 1)])
def test_arg_reductions(backend: str, rng: np.random.Generator, op: str, keepdims: int, last: int) -> None:
    ties = rng.integers(-3, 3, (3, 5, 4)).astype(np.float32)  # few distinct values: many ties
    for axis in (0, -1, 1):
        check_op(op, {"x": ties}, backend=backend, opset=13, axis=axis, keepdims=keepdims, select_last_index=last)
    check_op(op, {"x": rng.integers(-100, 100, (4, 6)).astype(np.int8)}, backend=backend, opset=13, axis=1,
             keepdims=keepdims, select_last_index=last)
    check_op(op, {"x": rng.integers(0, 4, (4, 6)).astype(np.uint8)}, backend=backend, opset=13, keepdims=keepdims,
             select_last_index=last)
    check_op(op, {"x": rng.integers(-4, 4, (4, 6)).astype(np.float16)}, backend=backend, opset=13, axis=-1,
             keepdims=keepdims, select_last_index=last)
    check_op(op, {"x": rng.integers(-50, 50, (4, 6)).astype(np.int64)}, backend=backend, opset=11, axis=-1,
             keepdims=keepdims)


def test_unsupported_forms_are_typed_errors_naming_the_node(rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 3)).astype(np.float32)
    xi = rng.integers(-5, 5, (2, 3)).astype(np.int32)
    with pytest.raises(ReprobuildError, match=r"node '[^']*' \(op ReduceLogSum\).*int32"):
        build_and_run(node_model("ReduceLogSum", {"x": xi}, opset=18), {"x": xi})
    with pytest.raises(ReprobuildError, match=r"node '[^']*' \(op ReduceSum\).*name axis 2, outside \[-2, 1\]"):
        build_and_run(_declared(node_model("ReduceSum", {"x": x}, opset=11, axes=[2]), (2, 3), np.float32), {"x": x})
    with pytest.raises(ReprobuildError, match=r"\(op ReduceMean\).*divides by zero"):
        empty = np.zeros((2, 0), np.int32)
        build_and_run(node_model("ReduceMean", {"x": empty}, opset=18), {"x": empty})
    with pytest.raises(ReprobuildError, match=r"\(op ArgMax\).*size 0"):
        empty = np.zeros((2, 0), np.float32)
        build_and_run(node_model("ArgMax", {"x": empty}, opset=13, axis=1), {"x": empty})
    # axes computed at run time: a StaticInputError naming the network input to pin
    feeds = {"x": x, "axes": np.array([1], np.int64)}
    with pytest.raises(StaticInputError, match=r"\(op ReduceMax\): input 1 \(the axes to reduce\)") as caught:
        build_and_run(_declared(node_model("ReduceMax", feeds, opset=18), (2, 1), np.float32), feeds)
    assert caught.value.inputs == ("axes",)

"""CumSum, CumProd and TopK (op_cumulative) against onnxruntime, or against explicit values where onnxruntime
has no kernel (CumProd, opset 26) or leaves the order open (TopK with sorted=0)."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import pytest
from onnx import helper

from reprobuild.core.errors import ReprobuildError
from reprobuild.ops import StaticInputError
from tests.ops.util import BACKENDS, build_and_run, check_op, node_model


def _scan(x: np.ndarray, axis: int, exclusive: int, reverse: int, product: bool) -> np.ndarray:
    """CumSum / CumProd in float64 (or the integer type), element by element, as ONNX defines them."""
    work = x.astype(np.float64) if x.dtype.kind == "f" else x
    moved = np.moveaxis(work, axis, -1)
    out = np.empty_like(moved)
    n = moved.shape[-1]
    for i in range(n):
        span = range(i + 1, n) if reverse and exclusive else range(i, n) if reverse else \
            range(i) if exclusive else range(i + 1)
        picked = moved[..., list(span)]
        out[..., i] = picked.prod(-1, dtype=moved.dtype) if product else picked.sum(-1, dtype=moved.dtype)
    return np.moveaxis(out, -1, axis).astype(x.dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("exclusive", "reverse"), [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_cumsum(backend: str, rng: np.random.Generator, exclusive: int, reverse: int) -> None:
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    for axis in (np.array(1, np.int64), np.array([-1], np.int32), np.array(0, np.int32)):
        check_op("CumSum", {"x": x}, backend=backend, opset=14, initializers={"axis": axis}, exclusive=exclusive,
                 reverse=reverse)
    xi = rng.integers(-100, 100, (4, 6)).astype(np.int32)
    check_op("CumSum", {"x": xi}, backend=backend, opset=11, initializers={"axis": np.array(1, np.int64)},
             exclusive=exclusive, reverse=reverse)
    x16 = rng.standard_normal((2, 7)).astype(np.float16)
    check_op("CumSum", {"x": x16}, backend=backend, opset=14, initializers={"axis": np.array(-1, np.int64)},
             exclusive=exclusive, reverse=reverse, rtol=5e-3, atol=5e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cumsum_with_a_pinned_axis_and_other_types(backend: str, rng: np.random.Generator) -> None:
    x = rng.standard_normal((3, 4)).astype(np.float64)
    check_op("CumSum", {"x": x, "axis": np.array(0, np.int64)}, backend=backend, opset=14, pinned=["axis"])
    xl = rng.integers(-2**40, 2**40, (3, 4)).astype(np.int64)
    check_op("CumSum", {"x": xl}, backend=backend, opset=14, initializers={"axis": np.array(0, np.int64)},
             reverse=1)
    u = rng.integers(0, 2**32, (3, 5), dtype=np.uint64).astype(np.uint32)  # wraps, as integer addition does
    check_op("CumSum", {"x": u}, backend=backend, opset=14, initializers={"axis": np.array(1, np.int64)},
             expected={"y": _scan(u, 1, 0, 0, product=False)})


def test_cumsum_bfloat16_on_the_cpu(rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 6)).astype(ml_dtypes.bfloat16)
    want = np.cumsum(x.astype(np.float32), axis=1).astype(ml_dtypes.bfloat16)
    check_op("CumSum", {"x": x}, opset=14, initializers={"axis": np.array(1, np.int64)}, expected={"y": want})


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("exclusive", "reverse"), [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_cumprod(backend: str, rng: np.random.Generator, exclusive: int, reverse: int) -> None:
    x = (rng.uniform(0.5, 1.5, (3, 4, 5)) * rng.choice([-1, 1], (3, 4, 5))).astype(np.float32)
    for axis in (0, 2, -2):
        check_op("CumProd", {"x": x}, backend=backend, opset=26, initializers={"axis": np.array(axis, np.int64)},
                 exclusive=exclusive, reverse=reverse, expected={"y": _scan(x, axis, exclusive, reverse, True)})
    xi = rng.integers(-5, 6, (3, 6)).astype(np.int64)
    check_op("CumProd", {"x": xi}, backend=backend, opset=26, initializers={"axis": np.array(1, np.int32)},
             exclusive=exclusive, reverse=reverse, expected={"y": _scan(xi, 1, exclusive, reverse, True)})
    x16 = rng.uniform(0.5, 1.5, (2, 6)).astype(np.float16)
    check_op("CumProd", {"x": x16}, backend=backend, opset=26, initializers={"axis": np.array(1, np.int64)},
             exclusive=exclusive, reverse=reverse, expected={"y": _scan(x16, 1, exclusive, reverse, True)},
             rtol=2e-3, atol=1e-3)


def _declared(model: Any, *outputs: tuple[tuple[int, ...], Any]) -> Any:
    """Declare the outputs' shapes and dtypes: onnx cannot infer them for the invalid forms, and its checker
    needs them."""
    for out, (shape, dtype) in zip(model.graph.output, outputs):
        out.CopyFrom(helper.make_tensor_value_info(out.name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)),
                                                   list(shape)))
    return model


def _topk(x: np.ndarray, k: int, axis: int, largest: int, backend: str, opset: int = 11, **attrs: Any) -> None:
    check_op("TopK", {"x": x}, backend=backend, n_outputs=2, opset=opset,
             initializers={"k": np.array([k], np.int64)}, axis=axis, largest=largest, **attrs)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("largest", [1, 0])
def test_topk(backend: str, rng: np.random.Generator, largest: int) -> None:
    x = rng.standard_normal((3, 5, 6)).astype(np.float32)
    for axis, k in ((-1, 3), (1, 5), (0, 1)):
        _topk(x, k, axis, largest, backend)
    ties = rng.integers(-2, 3, (4, 9))  # few distinct values: ties resolved by the smaller index first
    for dtype in (np.int32, np.int64, np.uint8, np.float64, np.float16):
        _topk(ties.astype(dtype) if dtype != np.uint8 else (ties + 2).astype(np.uint8), 4, 1, largest, backend)
    _topk(ties.astype(np.float32), 0, 1, largest, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_topk_versions_pinned_k_and_unsorted(backend: str, rng: np.random.Generator) -> None:
    x = rng.standard_normal((4, 7)).astype(np.float32)
    check_op("TopK", {"x": x}, backend=backend, n_outputs=2, opset=9, k=3)  # k as an attribute
    check_op("TopK", {"x": x}, backend=backend, n_outputs=2, opset=10, initializers={"k": np.array([2], np.int64)},
             axis=0)
    check_op("TopK", {"x": x, "k": np.array([5], np.int64)}, backend=backend, n_outputs=2, opset=11, pinned=["k"])
    # sorted=0 leaves the order open: compare the selections as sets
    model = node_model("TopK", {"x": x}, n_outputs=2, opset=11, initializers={"k": np.array([3], np.int64)},
                       sorted=0)
    got = build_and_run(model, {"x": x}, backend)
    want = np.sort(np.argsort(-x, axis=1, kind="stable")[:, :3], axis=1)
    np.testing.assert_array_equal(np.sort(got["y1"], axis=1), want)
    np.testing.assert_array_equal(got["y0"], np.take_along_axis(x, got["y1"], axis=1))


def test_unsupported_forms_are_typed_errors_naming_the_node(rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 3)).astype(np.float32)
    with pytest.raises(ReprobuildError, match=r"node '[^']*' \(op TopK\): k=4 is outside \[0, 3\]"):
        model = node_model("TopK", {"x": x}, n_outputs=2, opset=11, initializers={"k": np.array([4], np.int64)})
        build_and_run(_declared(model, ((2, 4), np.float32), ((2, 4), np.int64)), {"x": x})
    with pytest.raises(ReprobuildError, match=r"node '[^']*' \(op CumSum\): input 1 \(the axis\) must hold one"):
        build_and_run(node_model("CumSum", {"x": x}, opset=14, initializers={"axis": np.array([0, 1], np.int64)}),
                      {"x": x})
    with pytest.raises(ReprobuildError, match=r"node '[^']*' \(op CumSum\).*axis 2 is out of range"):
        build_and_run(node_model("CumSum", {"x": x}, opset=14, initializers={"axis": np.array(2, np.int64)}), {"x": x})
    with pytest.raises(ReprobuildError, match=r"\(op CumSum\).*bool"):
        b = x > 0
        build_and_run(node_model("CumSum", {"x": b}, opset=14, initializers={"axis": np.array(0, np.int64)}), {"x": b})
    # k computed at run time: a StaticInputError naming the network input to pin
    feeds = {"x": x, "k": np.array([2], np.int64)}
    with pytest.raises(StaticInputError, match=r"\(op TopK\): input 1 \(K, how many values to keep\)") as caught:
        build_and_run(node_model("TopK", feeds, n_outputs=2, opset=11), feeds)
    assert caught.value.inputs == ("k",)

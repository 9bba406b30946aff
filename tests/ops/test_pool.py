"""Pooling ops against onnxruntime on fresh random inputs: MaxPool (Y and Indices, float and int8/uint8),
AveragePool, LpPool, GlobalLpPool, the global pools, and MaxUnpool."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper

from reprobuild.core.errors import ReprobuildError
from tests.ops.util import BACKENDS, build_and_run, check_op, node_model, ort_outputs

WINDOWS: list[tuple[tuple[int, ...], dict[str, Any]]] = [
    ((2, 3, 9), {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}),
    ((1, 2, 7, 6), {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 1, 1], "dilations": [1, 2],
                    "ceil_mode": 1}),
    ((1, 2, 6, 5), {"kernel_shape": [2, 3], "auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((1, 2, 4, 5, 3), {"kernel_shape": [2, 2, 2], "strides": [1, 2, 1], "pads": [0, 1, 1, 1, 0, 0]}),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("window", range(len(WINDOWS)))
def test_max_pool_with_indices(backend: str, rng: np.random.Generator, window: int) -> None:
    shape, attrs = WINDOWS[window]
    x = rng.standard_normal(shape).astype(np.float32)
    check_op("MaxPool", {"x": x}, n_outputs=2, backend=backend, **attrs)
    if len(shape) > 3:
        check_op("MaxPool", {"x": x}, n_outputs=2, backend=backend, storage_order=1, **attrs)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_max_pool_of_small_integers(backend: str, rng: np.random.Generator, dtype: Any) -> None:
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max, (2, 2, 6, 7), endpoint=True).astype(dtype)
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 0]}
    check_op("MaxPool", {"x": x}, backend=backend, **attrs)
    # onnxruntime picks among equal maxima as the ONNX reference does only for floats: compare Y with it, and
    # check that every index points at its maximum
    got = check_op("MaxPool", {"x": x}, n_outputs=2, backend=backend, expected={}, **attrs)
    want = ort_outputs(node_model("MaxPool", {"x": x}, **attrs), {"x": x})["y"]
    np.testing.assert_array_equal(got["y0"], want)
    np.testing.assert_array_equal(x.reshape(-1)[got["y1"]], got["y0"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_and_average_pool_in_half_precision(backend: str, rng: np.random.Generator) -> None:
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float16)
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    check_op("MaxPool", {"x": x}, n_outputs=2, backend=backend, **attrs)
    check_op("AveragePool", {"x": x}, backend=backend, rtol=1e-3, atol=1e-3, count_include_pad=1, **attrs)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("p", [1, 2, 3])
def test_lp_pool(backend: str, rng: np.random.Generator, p: int) -> None:
    for shape, attrs in WINDOWS:  # onnxruntime implements LpPool up to version 18
        x = rng.standard_normal(shape).astype(np.float32)
        check_op("LpPool", {"x": x}, backend=backend, rtol=1e-4, atol=1e-5, p=p, opset=18, **attrs)
    x64 = rng.standard_normal((1, 2, 5, 5))  # and has no float64 one
    want = (np.abs(x64[..., :-1]) ** p + np.abs(x64[..., 1:]) ** p) ** (1 / p)
    check_op("LpPool", {"x": x64}, backend=backend, rtol=1e-10, p=p, kernel_shape=[1, 2], opset=11,
             expected={"y": want})


@pytest.mark.parametrize("backend", BACKENDS)
def test_global_pools(backend: str, rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    for p in (1, 2, 3):  # onnxruntime implements GlobalLpPool up to version 2
        check_op("GlobalLpPool", {"x": x}, backend=backend, rtol=1e-4, p=p, opset=21)
    x64 = x.astype(np.float64)
    want = np.sqrt((x64 ** 2).sum(axis=(2, 3), keepdims=True))
    check_op("GlobalLpPool", {"x": x64}, backend=backend, rtol=1e-10, expected={"y": want})
    check_op("GlobalAveragePool", {"x": x}, backend=backend, rtol=1e-5)
    check_op("GlobalMaxPool", {"x": x}, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("overlapping", [False, True])
def test_max_unpool_undoes_max_pool(backend: str, rng: np.random.Generator, overlapping: bool) -> None:
    x = rng.standard_normal((2, 3, 6, 7)).astype(np.float32)
    attrs: dict[str, Any] = {"kernel_shape": [3, 3], "strides": [1, 2]} if overlapping else \
        {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [0, 0, 0, 1]}
    pooled = ort_outputs(node_model("MaxPool", {"x": x}, n_outputs=2, **attrs), {"x": x})
    values, indices = pooled["y0"], pooled["y1"]
    check_op("MaxUnpool", {"v": values, "i": indices}, backend=backend, **attrs)
    out = (2, 3, *((values.shape[2 + d] - 1) * attrs["strides"][d] - sum(attrs.get("pads", [0] * 4)[d::2])
                   + attrs["kernel_shape"][d] for d in range(2)))
    model = _declared(node_model("MaxUnpool", {"v": values, "i": indices}, initializers={
        "s": np.array(out, dtype=np.int64)}, **attrs), out)
    feeds = {"v": values, "i": indices}
    np.testing.assert_array_equal(build_and_run(model, feeds, backend)["y"], ort_outputs(model, feeds)["y"])


def _declared(model: onnx.ModelProto, shape: Sequence[int]) -> onnx.ModelProto:
    """The model with its float32 output's shape declared (ONNX's shape inference leaves it unknown when
    MaxUnpool has an output_shape input, and an undeclared output is rejected)."""
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, list(shape)))
    return model


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_unpool_of_repeated_and_stray_indices(backend: str, rng: np.random.Generator) -> None:
    """The last of repeated indices wins; indices outside the output are dropped (onnxruntime rejects them)."""
    values = rng.standard_normal((1, 1, 2, 2)).astype(np.float32)
    indices = np.array([[[[5, 5], [-1, 99]]]], dtype=np.int64)
    want = np.zeros((1, 1, 4, 4), dtype=np.float32)
    want.reshape(-1)[5] = values[0, 0, 0, 1]
    check_op("MaxUnpool", {"v": values, "i": indices}, backend=backend, expected={"y": want}, kernel_shape=[2, 2],
             strides=[2, 2])


def _refused(op: str, inputs: dict[str, np.ndarray], match: str, n_outputs: int = 1,
             initializers: dict[str, np.ndarray] | None = None, opset: int | None = None, **attrs: Any) -> None:
    model = node_model(op, inputs, n_outputs, initializers, opset, **attrs)
    with pytest.raises(ReprobuildError, match=rf"node .*\(op {op}\).*{match}"):
        build_and_run(model, inputs)


def test_unsupported_pool_forms_are_refused(rng: np.random.Generator) -> None:
    x = rng.standard_normal((1, 1, 4, 4)).astype(np.float32)
    _refused("MaxPool", {"x": x}, "entirely in the padding", kernel_shape=[2, 2], pads=[2, 0, 0, 0])
    _refused("MaxPool", {"x": x.astype(np.int8)}, "version 12", opset=11, kernel_shape=[2, 2])
    _refused("LpPool", {"x": x}, "p >= 1", kernel_shape=[2, 2], p=0)
    values = rng.standard_normal((1, 1, 2, 2)).astype(np.float32)
    indices = np.zeros((1, 1, 2, 2), dtype=np.int64)
    model = _declared(node_model("MaxUnpool", {"v": values, "i": indices}, initializers={
        "s": np.array([1, 1, 5, 5], dtype=np.int64)}, kernel_shape=[2, 2], strides=[2, 2]), (1, 1, 5, 5))
    with pytest.raises(ReprobuildError, match=r"node .*\(op MaxUnpool\): output_shape \[1, 1, 5, 5\] differs"):
        build_and_run(model, {"v": values, "i": indices})

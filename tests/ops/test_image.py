"""GridSample, AffineGrid, RoiAlign and NonMaxSuppression (op_image and its _image_* helpers) against
onnxruntime on fresh random inputs, or against ONNX's reference where onnxruntime has no kernel (GridSample over
1 or 3 dimensions in cubic mode, float16)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from reprobuild.core.errors import ReprobuildError
from reprobuild.ops import StaticInputError
from tests.ops.util import BACKENDS, build_and_run, check_op, node_model, ort_outputs


def _grid(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    """Normalized coordinates, many of them outside [-1, 1] to exercise the padding modes."""
    return rng.uniform(-1.7, 1.7, shape).astype(dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align_corners", [0, 1])
def test_grid_sample_16(backend: str, rng: np.random.Generator, mode: str, padding_mode: str,
                        align_corners: int) -> None:
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    check_op("GridSample", {"x": x, "grid": _grid(rng, (2, 3, 6, 2))}, backend=backend, opset=16, mode=mode,
             padding_mode=padding_mode, align_corners=align_corners, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("mode", "padding_mode", "dtype"), [
    ("linear", "zeros", np.float64), ("nearest", "reflection", np.float32), ("linear", "border", np.float32)])
def test_grid_sample_20_volumetric_and_float64(backend: str, rng: np.random.Generator, mode: str, padding_mode: str,
                                               dtype: Any) -> None:
    x = rng.standard_normal((1, 2, 3, 4, 5)).astype(dtype)
    check_op("GridSample", {"x": x, "grid": _grid(rng, (1, 2, 3, 4, 3), dtype)}, backend=backend, opset=20,
             mode=mode, padding_mode=padding_mode, align_corners=1, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("spatial", "mode", "padding_mode", "dtype"), [
    ((7,), "cubic", "reflection", np.float32), ((3, 4, 3), "cubic", "zeros", np.float32),
    ((2, 3, 2, 3), "linear", "border", np.float32), ((4, 5), "cubic", "border", np.float16)])
def test_grid_sample_against_onnx_reference(backend: str, rng: np.random.Generator, spatial: tuple[int, ...],
                                            mode: str, padding_mode: str, dtype: Any) -> None:
    """Forms onnxruntime cannot run. float16 is compared with the float32 result (cubic border follows PyTorch,
    which ONNX's reference does not, so that case uses onnxruntime's float32)."""
    nd = len(spatial)
    feeds = {"x": rng.standard_normal((2, 2, *spatial)).astype(dtype), "grid": _grid(rng, (2, *(3,) * nd, nd), dtype)}
    model = node_model("GridSample", feeds, opset=20, mode=mode, padding_mode=padding_mode, align_corners=0)
    got = build_and_run(model, feeds, backend)["y"]
    as32 = {k: v.astype(np.float32) for k, v in feeds.items()}
    if dtype == np.float16:
        want = ort_outputs(node_model("GridSample", as32, opset=20, mode=mode, padding_mode=padding_mode), as32)["y"]
    else:
        want = ReferenceEvaluator(model).run(None, feeds)[0]
    assert got.dtype == dtype
    tol = 1e-2 if dtype == np.float16 else 1e-5
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["linear", "nearest", "cubic"])
def test_grid_sample_nan_points_and_inf_pixels(backend: str, mode: str) -> None:
    """A NaN coordinate gives NaN; a point far outside (zeros padding) is 0 even next to an inf pixel."""
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    x[0, 0, 0, 0] = np.inf
    grid = np.array([[[[np.nan, 0.0], [-5.0, -5.0], [0.5, 0.5]]]], dtype=np.float32)
    y = build_and_run(node_model("GridSample", {"x": x, "grid": grid}, mode=mode), {"x": x, "grid": grid},
                      backend)["y"]
    assert np.isnan(y[0, 0, 0, 0]) and y[0, 0, 0, 1] == 0 and np.isfinite(y[0, 0, 0, 2])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("size", "align_corners", "dtype"), [
    ((2, 3, 4, 5), 0, np.float32), ((2, 3, 4, 5), 1, np.float64), ((1, 2, 3, 4, 5), 0, np.float32),
    ((1, 2, 3, 4, 5), 1, np.float32), ((2, 1, 1, 3), 0, np.float32)])
def test_affine_grid(backend: str, rng: np.random.Generator, size: tuple[int, ...], align_corners: int,
                     dtype: Any) -> None:
    r = len(size) - 2
    theta = rng.standard_normal((size[0], r, r + 1)).astype(dtype)
    check_op("AffineGrid", {"theta": theta}, backend=backend, initializers={"size": np.array(size, dtype=np.int64)},
             opset=20, align_corners=align_corners, rtol=1e-5, atol=1e-5)


def _rois(rng: np.random.Generator, count: int, height: int, width: int) -> np.ndarray:
    """Boxes (x1, y1, x2, y2) mostly inside the map, some past its edges, one degenerate."""
    x1, y1 = rng.uniform(-2, width - 1, count), rng.uniform(-2, height - 1, count)
    boxes = np.stack([x1, y1, x1 + rng.uniform(0.5, width, count), y1 + rng.uniform(0.5, height, count)], axis=1)
    boxes[0, 2:] = boxes[0, :2]
    return boxes.astype(np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("mode", "ctm", "ratio", "scale"), [
    ("avg", "half_pixel", 2, 1.0), ("avg", "output_half_pixel", 0, 0.5), ("max", "output_half_pixel", 2, 1.0),
    ("max", "half_pixel", 0, 2.0), ("avg", "half_pixel", 3, 0.25)])
def test_roi_align(backend: str, rng: np.random.Generator, mode: str, ctm: str, ratio: int, scale: float) -> None:
    """With sampling_ratio > 0 the boxes are a run-time input; with 0 they are constants."""
    x = rng.standard_normal((2, 3, 8, 9)).astype(np.float32)
    rois = _rois(rng, 5, int(8 / scale), int(9 / scale))
    batch = rng.integers(0, 2, 5).astype(np.int64)
    feeds, inits = ({"x": x, "rois": rois, "batch": batch}, {}) if ratio else ({"x": x, "batch": batch},
                                                                               {"rois": rois})
    check_op("RoiAlign", feeds, backend=backend, initializers=inits, input_names=["x", "rois", "batch"], mode=mode,
             coordinate_transformation_mode=ctm, sampling_ratio=ratio, spatial_scale=scale, output_height=3,
             output_width=2, opset=16, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_roi_align_10_and_float64(backend: str, rng: np.random.Generator) -> None:
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float64)
    feeds = {"x": x, "rois": _rois(rng, 4, 6, 6).astype(np.float64), "batch": np.zeros(4, dtype=np.int64)}
    check_op("RoiAlign", feeds, backend=backend, opset=10, sampling_ratio=2, output_height=2, output_width=3)


def test_roi_align_adaptive_sampling_needs_the_boxes_at_build_time(rng: np.random.Generator) -> None:
    feeds = {"x": rng.standard_normal((1, 1, 4, 4)).astype(np.float32), "rois": _rois(rng, 2, 4, 4),
             "batch": np.zeros(2, dtype=np.int64)}
    model = node_model("RoiAlign", feeds, opset=16)
    with pytest.raises(StaticInputError, match=r"RoiAlign.*rois"):
        build_and_run(model, feeds)
    check_op("RoiAlign", feeds, pinned=["rois"], opset=16)


@pytest.mark.parametrize(("center", "inits"), [
    (0, {"max": np.array([3], np.int64), "iou": np.array([0.4], np.float32), "score": np.array([0.2], np.float32)}),
    (1, {"max": np.array([10], np.int64), "iou": np.array([0.6], np.float32)}),
    (0, {})])
def test_non_max_suppression_is_folded_from_constants(rng: np.random.Generator, center: int,
                                                      inits: dict[str, np.ndarray]) -> None:
    corner = rng.uniform(0, 10, (2, 12, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(0.5, 4, (2, 12, 2))], axis=2).astype(np.float32)
    scores = rng.uniform(0, 1, (2, 3, 12)).astype(np.float32)
    scores[0, 0, 5] = scores[0, 0, 7]  # a tie: the lower index first
    names = ["boxes", "scores", *inits]
    check_op("NonMaxSuppression", {}, initializers={"boxes": boxes, "scores": scores, **inits}, input_names=names,
             opset=11, center_point_box=center)


def _declared(model: onnx.ModelProto, elem_type: int, shape: list[int]) -> onnx.ModelProto:
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", elem_type, shape))
    return model


_X = np.ones((1, 1, 3, 3), np.float32)


@pytest.mark.parametrize(("op", "feeds", "inits", "attrs", "opset", "message"), [
    ("NonMaxSuppression", {"b": np.ones((1, 2, 4), np.float32), "s": np.ones((1, 1, 2), np.float32)}, {}, {}, None,
     "data-dependent number of rows"),
    ("GridSample", {"x": _X, "g": np.zeros((1, 2, 2, 2), np.float32)}, {}, {"mode": "linear"}, 16, "mode 'linear'"),
    ("GridSample", {"x": np.ones((1, 1, 2, 2, 2), np.float32), "g": np.zeros((1, 1, 1, 1, 3), np.float32)}, {},
     {"mode": "cubic", "padding_mode": "border"}, 20, "only for 2-D"),
    ("GridSample", {"x": np.ones((1, 1, 1, 3), np.float32), "g": np.zeros((1, 2, 2, 2), np.float32)}, {},
     {"padding_mode": "reflection", "align_corners": 1}, 20, "size 1"),
    ("AffineGrid", {"t": np.ones((1, 2, 3), np.float32)}, {"s": np.array([1, 1, 1, 4])}, {"align_corners": 1}, None,
     "spatial size of 1"),
    ("RoiAlign", {"x": _X, "r": np.ones((1, 4), np.float32), "i": np.zeros(1, np.int64)}, {},
     {"mode": "sum", "sampling_ratio": 1}, None, "mode 'sum'"),
])
def test_unsupported_forms_are_typed_errors_naming_the_node(op: str, feeds: dict[str, np.ndarray],
                                                            inits: dict[str, np.ndarray], attrs: dict[str, Any],
                                                            opset: int | None, message: str) -> None:
    model = _declared(node_model(op, feeds, initializers=inits, opset=opset, **attrs), TensorProto.FLOAT, [1])
    with pytest.raises(ReprobuildError, match=message) as info:
        build_and_run(model, feeds)
    assert op in str(info.value)

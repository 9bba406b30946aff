"""Resize and Upsample against onnxruntime (and, where onnxruntime departs from ONNX's reference, against
onnx.reference) on fresh random inputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator

from reprobuild.core.errors import ReprobuildError
from tests.ops.util import BACKENDS, build_and_run, check_op, node_model

F32 = np.float32


def _resize(backend: str, x: np.ndarray, *, scales: list[float] | None = None, sizes: list[int] | None = None,
            roi: list[float] | None = None, opset: int | None = None, rtol: float = 1e-5, atol: float = 1e-5,
            expected: dict[str, np.ndarray] | None = None, **attrs: Any) -> None:
    inits: dict[str, np.ndarray] = {}
    names = ["x", "", "", ""]
    if roi is not None:
        inits["roi"], names[1] = np.array(roi, dtype=F32), "roi"
    if scales is not None:
        inits["scales"], names[2] = np.array(scales, dtype=F32), "scales"
    if sizes is not None:
        inits["sizes"], names[3] = np.array(sizes, dtype=np.int64), "sizes"
    if opset == 11:  # roi and scales are required inputs there; empty ones stand for "not given"
        for i, name in ((1, "roi"), (2, "scales")):
            if names[i] == "":
                inits[name], names[i] = np.zeros(0, dtype=F32), name
    while names[-1] == "":
        names.pop()
    check_op("Resize", {"x": x}, initializers=inits, input_names=names, backend=backend, opset=opset, rtol=rtol,
             atol=atol, expected=expected, **attrs)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("nearest_mode", ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"])
def test_nearest(backend: str, rng: np.random.Generator, nearest_mode: str) -> None:
    x = rng.standard_normal((1, 2, 6, 8)).astype(F32)
    for ctm in ("half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"):
        kw = {"mode": "nearest", "nearest_mode": nearest_mode, "coordinate_transformation_mode": ctm}
        _resize(backend, x, sizes=[1, 2, 9, 5], **kw)
        _resize(backend, x, sizes=[1, 2, 4, 13], **kw)
        if ctm != "align_corners":  # from scales, onnxruntime's align_corners divides by the integer length
            _resize(backend, x, scales=[1, 1, 1.5, 0.75], **kw)
    _resize(backend, x, scales=[1, 1, 2.5, 0.5], mode="nearest", nearest_mode=nearest_mode,
            coordinate_transformation_mode="tf_half_pixel_for_nn", opset=11)
    _resize(backend, x, scales=[1, 1, 1.5, 0.5], mode="nearest", nearest_mode=nearest_mode,
            coordinate_transformation_mode="half_pixel_symmetric", opset=19)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nearest_keeps_integers_and_bools(backend: str, rng: np.random.Generator) -> None:
    x = rng.integers(0, 255, (1, 3, 4, 5), endpoint=True).astype(np.uint8)
    _resize(backend, x, scales=[1, 1, 2, 1.5], mode="nearest")
    xi = rng.integers(-2**31, 2**31 - 1, (2, 5, 3), endpoint=True).astype(np.int32)
    _resize(backend, xi, sizes=[3, 3, 7], mode="nearest", nearest_mode="ceil")
    xb = rng.random((4, 6)) < 0.5
    got = build_and_run(node_model("Resize", {"x": xb}, initializers={"s": np.array([2, 0.5], dtype=F32)},
                                   input_names=["x", "", "s"], mode="nearest"), {"x": xb}, backend)["y"]
    np.testing.assert_array_equal(got, xb.repeat(2, axis=0)[:, ::2])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ctm", ["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"])
def test_linear(backend: str, rng: np.random.Generator, ctm: str) -> None:
    x = rng.standard_normal((2, 3, 5, 6)).astype(F32)
    _resize(backend, x, sizes=[2, 3, 8, 4], mode="linear", coordinate_transformation_mode=ctm)
    _resize(backend, x, sizes=[2, 3, 3, 11], mode="linear", coordinate_transformation_mode=ctm)
    x3 = rng.standard_normal((1, 2, 3, 4, 5)).astype(F32)  # trilinear
    _resize(backend, x3, sizes=[1, 2, 5, 3, 7], mode="linear", coordinate_transformation_mode=ctm)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("exclude_outside", [0, 1])
def test_cubic(backend: str, rng: np.random.Generator, exclude_outside: int) -> None:
    x = rng.standard_normal((1, 2, 6, 7)).astype(F32)
    for ctm in ("half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"):
        for a in (-0.75, -0.5):
            _resize(backend, x, sizes=[1, 2, 9, 4], mode="cubic", cubic_coeff_a=a, exclude_outside=exclude_outside,
                    coordinate_transformation_mode=ctm, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_antialias_and_aspect_ratio(backend: str, rng: np.random.Generator, mode: str) -> None:
    x = rng.standard_normal((1, 2, 12, 9)).astype(F32)
    _resize(backend, x, sizes=[1, 2, 5, 4], mode=mode, antialias=1, rtol=1e-4)
    _resize(backend, x, scales=[1, 1, 0.5, 1.5], mode=mode, antialias=1, rtol=1e-4)
    for policy in ("not_larger", "not_smaller"):
        _resize(backend, x, sizes=[7, 5], axes=[2, 3], keep_aspect_ratio_policy=policy, mode=mode, rtol=1e-4)
    _resize(backend, x, scales=[0.5, 2.0], axes=[3, 2], mode=mode, rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tf_crop_and_resize(backend: str, rng: np.random.Generator) -> None:
    x = rng.standard_normal((1, 2, 6, 7)).astype(F32)
    roi = [0, 0, 0.2, 0.1, 1, 1, 0.9, 1.2]
    for mode in ("nearest", "linear", "cubic"):
        _resize(backend, x, roi=roi, sizes=[1, 2, 4, 9], mode=mode, extrapolation_value=-7.5,
                coordinate_transformation_mode="tf_crop_and_resize", rtol=1e-4)
    _resize(backend, x, roi=[0.3, -0.2, 0.8, 0.7], sizes=[5, 3], axes=[2, 3], mode="linear",
            coordinate_transformation_mode="tf_crop_and_resize")


@pytest.mark.parametrize("backend", BACKENDS)
def test_half_precision_and_float64(backend: str, rng: np.random.Generator) -> None:
    x = rng.standard_normal((1, 2, 5, 6))  # onnxruntime resizes neither float64 nor float16: onnx.reference
    for dtype, mode, tol in ((np.float64, "linear", 1e-12), (np.float16, "cubic", 2e-3)):
        xd = x.astype(dtype)
        model = node_model("Resize", {"x": xd}, initializers={"z": np.array([1, 2, 7, 4])},
                           input_names=["x", "", "", "z"], mode=mode)
        want = ReferenceEvaluator(model).run(None, {"x": xd})[0]
        _resize(backend, xd, sizes=[1, 2, 7, 4], mode=mode, expected={"y": want}, rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_align_corners_from_fractional_scales_follows_the_reference(backend: str, rng: np.random.Generator) -> None:
    """The ONNX reference divides by scale * length (onnx/onnx#2462), onnxruntime by the output length."""
    x = rng.standard_normal((1, 1, 4, 5)).astype(F32)
    kw = {"mode": "linear", "coordinate_transformation_mode": "align_corners"}
    model = node_model("Resize", {"x": x}, initializers={"s": np.array([1, 1, 0.6, 0.7], dtype=F32)},
                       input_names=["x", "", "s"], **kw)
    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    _resize(backend, x, scales=[1, 1, 0.6, 0.7], expected={"y": want}, **kw)


@pytest.mark.parametrize("backend", BACKENDS)
def test_resize_10_and_upsample(backend: str, rng: np.random.Generator) -> None:
    x = rng.standard_normal((1, 2, 3, 4)).astype(F32)
    for mode in ("nearest", "linear"):
        scales = np.array([1, 1, 2, 1.5], dtype=F32)
        check_op("Resize", {"x": x}, initializers={"s": scales}, backend=backend, opset=10, mode=mode)
        check_op("Upsample", {"x": x}, initializers={"s": scales}, backend=backend, opset=9, mode=mode)
        check_op("Upsample", {"x": x}, backend=backend, opset=7, mode=mode, scales=[1.0, 1.0, 3.0, 2.0])
    check_op("Resize", {"x": x}, initializers={"s": np.array([1, 1, 0.5, 0.5], dtype=F32)}, backend=backend,
             opset=10, mode="linear")


@pytest.mark.parametrize("op, opset, attrs, inits, match", [
    ("Resize", None, {"mode": "linear"}, {"s": np.array([1, 2], dtype=F32)}, "Cast to a float"),
    ("Resize", None, {"mode": "nearest", "antialias": 1}, {"s": np.array([1, 2], dtype=F32)}, "antialias"),
    ("Resize", 10, {"mode": "nearest"}, {"s": np.array([1, 0.5], dtype=F32)}, "ambiguous"),
    ("Upsample", 9, {"mode": "nearest"}, {"s": np.array([1, 0.5], dtype=F32)}, "only enlarges"),
    ("Resize", None, {"mode": "cubic", "coordinate_transformation_mode": "pytorch_half_pixel"},
     {"z": np.array([4, 1])}, "samples at -0.5"),
])
def test_unsupported_forms_are_refused(rng: np.random.Generator, op: str, opset: int | None, attrs: dict[str, Any],
                                       inits: dict[str, np.ndarray], match: str) -> None:
    x = rng.standard_normal((4, 6)).astype(F32) if "linear" not in attrs.values() else \
        rng.integers(0, 9, (4, 6)).astype(np.int32)
    names = ["x", "", "", "z"] if "z" in inits else (["x", "s"] if opset in (9, 10) else ["x", "", "s"])
    model = node_model(op, {"x": x}, initializers=inits, input_names=names, opset=opset, **attrs)
    with pytest.raises(ReprobuildError, match=rf"node .*\(op {op}\).*{match}"):
        build_and_run(model, {"x": x})

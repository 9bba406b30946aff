"""ConvTranspose, Col2Im and DeformConv against onnxruntime on fresh random inputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from reprobuild.core.errors import ReprobuildError
from tests.ops.util import BACKENDS, build_and_run, check_op, node_model

CONV_TRANSPOSE_FORMS: list[tuple[tuple[int, ...], tuple[int, ...], dict[str, Any]]] = [
    ((1, 2, 5), (2, 3, 3), {"strides": [2]}),
    ((2, 2, 4, 5), (2, 3, 3, 2), {"strides": [2, 1], "pads": [1, 0, 0, 1], "output_padding": [1, 0]}),
    ((1, 4, 3, 4), (4, 2, 3, 3), {"group": 2, "dilations": [2, 1], "pads": [1, 1, 2, 0]}),
    ((1, 2, 2, 3, 3), (2, 2, 2, 2, 3), {"strides": [1, 2, 2], "pads": [0, 1, 1, 1, 0, 1]}),
    ((1, 2, 5, 4), (2, 3, 3, 3), {"strides": [2, 3], "auto_pad": "SAME_UPPER"}),
    ((1, 2, 5, 4), (2, 3, 4, 3), {"strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    ((1, 2, 5), (2, 3, 3), {"strides": [2], "output_shape": [12]}),
    ((1, 2, 5), (2, 3, 3), {"strides": [2], "output_shape": [9]}),
    ((1, 2, 5), (2, 3, 3), {"strides": [2], "output_shape": [10], "auto_pad": "SAME_LOWER"}),
    ((1, 2, 4), (2, 1, 3), {"strides": [2], "auto_pad": "VALID", "output_padding": [1]}),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("form", range(len(CONV_TRANSPOSE_FORMS)))
def test_conv_transpose_forms(backend: str, rng: np.random.Generator, form: int) -> None:
    xs, ws, attrs = CONV_TRANSPOSE_FORMS[form]
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[1] * attrs.get("group", 1)).astype(np.float32)
    check_op("ConvTranspose", {"x": x}, initializers={"w": w, "b": b}, backend=backend, rtol=1e-4, atol=1e-5,
             **attrs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_conv_transpose_run_time_weight_float64_and_float16(backend: str, rng: np.random.Generator) -> None:
    x = rng.standard_normal((1, 3, 4, 4))
    w = rng.standard_normal((3, 2, 2, 2))
    check_op("ConvTranspose", {"x": x, "w": w}, backend=backend, strides=[2, 2], rtol=1e-10,
             expected={"y": _conv_transpose_2x2(x, w)})  # onnxruntime has no float64 ConvTranspose
    x16, w16 = x.astype(np.float16), w.astype(np.float16)
    want = {"y": _conv_transpose_2x2(x16.astype(np.float32), w16.astype(np.float32)).astype(np.float16)}
    check_op("ConvTranspose", {"x": x16, "w": w16}, backend=backend, strides=[2, 2], expected=want, rtol=1e-3,
             atol=1e-3)


def _conv_transpose_2x2(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Stride-2, kernel-2 ConvTranspose: every input pixel paints its own 2x2 block."""
    y = np.einsum("ncij,cmkl->nmikjl", x, w)
    n, m, h, _, wd, _ = y.shape
    return y.reshape(n, m, 2 * h, 2 * wd)


@pytest.mark.parametrize("backend", BACKENDS)
def test_col2im(backend: str, rng: np.random.Generator) -> None:
    image, block = np.array([5, 6], dtype=np.int64), np.array([2, 3], dtype=np.int64)
    attrs: dict[str, Any] = {"strides": [1, 2], "pads": [1, 0, 0, 1], "dilations": [2, 1]}
    blocks = [(5 + 1 + 0 - 2 * 1 - 1) // 1 + 1, (6 + 0 + 1 - 1 * 2 - 1) // 2 + 1]
    x = rng.standard_normal((2, 2 * 6, blocks[0] * blocks[1])).astype(np.float32)
    check_op("Col2Im", {"x": x}, initializers={"i": image, "b": block}, backend=backend, **attrs)
    xi = rng.integers(-50, 50, (1, 6, 8)).astype(np.int32)  # 3-D: one channel, 2*1*3 taps, 4*2*1 blocks
    check_op("Col2Im", {"x": xi}, initializers={"i": np.array([5, 2, 3]), "b": np.array([2, 1, 3])},
             backend=backend, expected={"y": _col2im_naive(xi, (5, 2, 3), (2, 1, 3))})


def _col2im_naive(x: np.ndarray, image: tuple[int, ...], block: tuple[int, ...]) -> np.ndarray:
    """Unit strides, no pads or dilations: block b, tap t adds to image position b + t."""
    taps = int(np.prod(block))
    blocks = tuple(i - k + 1 for i, k in zip(image, block))
    cols = x.reshape(x.shape[0], x.shape[1] // taps, *block, *blocks)
    y = np.zeros((x.shape[0], cols.shape[1], *image), dtype=x.dtype)
    for tap in np.ndindex(*block):
        index = tuple(slice(t, t + b) for t, b in zip(tap, blocks))
        y[(slice(None), slice(None), *index)] += cols[(slice(None), slice(None), *tap)]
    return y


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("with_mask", [False, True])
def test_deform_conv(backend: str, rng: np.random.Generator, with_mask: bool) -> None:
    x = rng.standard_normal((2, 4, 5, 6)).astype(np.float32)
    w = rng.standard_normal((4, 2, 3, 2)).astype(np.float32)
    attrs: dict[str, Any] = {"group": 2, "offset_group": 2, "pads": [1, 0, 1, 1], "strides": [1, 2],
                             "dilations": [1, 2]}
    out = ((5 + 2 - 3) + 1, (6 + 1 - 3) // 2 + 1)
    offset = (rng.standard_normal((2, 2 * 6 * 2, *out)) * 2).astype(np.float32)
    inputs = {"x": x, "w": w, "offset": offset}
    names = ["x", "w", "offset"]
    if with_mask:
        inputs["mask"] = rng.random((2, 2 * 6, *out)).astype(np.float32)
        names += ["", "mask"]
    check_op("DeformConv", inputs, input_names=names, backend=backend, rtol=1e-4, atol=1e-5, **attrs)
    bias = rng.standard_normal(4).astype(np.float32)
    check_op("DeformConv", {"x": x, "w": w, "offset": offset}, initializers={"b": bias}, backend=backend, rtol=1e-4,
             atol=1e-5, **attrs)


@pytest.mark.parametrize("attrs, message", [
    ({"strides": [2], "output_shape": [10]}, "odd"),
    ({"strides": [2], "output_shape": [11], "pads": [1, 1]}, "pads"),
    ({"strides": [3], "auto_pad": "SAME_UPPER"}, "negative padding"),
])
def test_ambiguous_conv_transpose_forms_are_refused(rng: np.random.Generator, attrs: dict[str, Any],
                                                    message: str) -> None:
    x = rng.standard_normal((1, 2, 5)).astype(np.float32)
    w = rng.standard_normal((2, 3, 1 if "auto_pad" in attrs else 3)).astype(np.float32)
    model = node_model("ConvTranspose", {"x": x}, initializers={"w": w}, **attrs)
    with pytest.raises(ReprobuildError, match=rf"node .*\(op ConvTranspose\).*{message}"):
        build_and_run(model, {"x": x})


def test_deform_conv_3d_is_refused(rng: np.random.Generator) -> None:
    x = rng.standard_normal((1, 1, 3, 3, 3)).astype(np.float32)
    w = rng.standard_normal((1, 1, 1, 1, 1)).astype(np.float32)
    offset = rng.standard_normal((1, 3, 3, 3, 3)).astype(np.float32)
    model = node_model("DeformConv", {"x": x, "offset": offset}, initializers={"w": w},
                       input_names=["x", "w", "offset"])
    with pytest.raises(ReprobuildError, match=r"\(op DeformConv\).*only 2-D"):
        build_and_run(model, {"x": x, "offset": offset})

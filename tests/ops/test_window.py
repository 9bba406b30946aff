"""auto_pad=SAME_* with a stride larger than the kernel, where the spec's padding formula goes negative (issue 20,
finding 9), in every op that resolves SAME padding (``reprobuild.ops._window.resolve_window``): Conv and
ConvInteger compute what onnxruntime and ONNX's reference evaluator both compute; the pools, where the two
disagree, refuse naming the node (ConvTranspose refuses too: tests/ops/test_convtranspose.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator

from reprobuild.core.errors import UnsupportedOpError
from tests.ops.util import BACKENDS, build_and_run, check_op, node_model, ort_outputs

#: (input shape, kernel, strides): ceil(size / stride) windows need a negative total padding in every case.
NEGATIVE = [((1, 2, 7), [2], [4]), ((1, 1, 5), [1], [3]), ((2, 3, 6, 7), [1, 2], [3, 4])]


def _reference_evaluator(model: Any, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    evaluator = ReferenceEvaluator(model)
    return dict(zip(evaluator.output_names, evaluator.run(None, feeds)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize("case", range(len(NEGATIVE)))
def test_conv_with_a_negative_same_padding_matches_both_references(backend: str, rng: np.random.Generator,
                                                                   auto_pad: str, case: int) -> None:
    """onnxruntime and the reference evaluator agree here: no padding, windows from the first element."""
    shape, kernel, strides = NEGATIVE[case]
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((4, shape[1], *kernel)).astype(np.float32)
    attrs = {"auto_pad": auto_pad, "strides": strides}
    got = check_op("Conv", {"x": x}, backend=backend, initializers={"w": w}, **attrs)  # against onnxruntime
    want = _reference_evaluator(node_model("Conv", {"x": x}, initializers={"w": w}, **attrs), {"x": x})
    np.testing.assert_allclose(got["y"], want["y"], rtol=1e-5, atol=1e-6)
    xi = rng.integers(-128, 127, shape, endpoint=True).astype(np.int8)
    wi = rng.integers(-128, 127, (4, shape[1], *kernel), endpoint=True).astype(np.int8)
    got = check_op("ConvInteger", {"x": xi, "w": wi}, backend=backend, **attrs)
    want = _reference_evaluator(node_model("ConvInteger", {"x": xi, "w": wi}, **attrs), {"x": xi, "w": wi})
    np.testing.assert_array_equal(got["y"], want["y"])


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool", "LpPool"])
@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
def test_pooling_with_a_negative_same_padding_is_refused(rng: np.random.Generator, op: str, auto_pad: str) -> None:
    """The spec does not say where a negative padding goes and the references disagree (onnxruntime refuses
    MaxPool and crops trunc(total / 2) from the start of AveragePool and LpPool under SAME_UPPER; the reference
    evaluator crops floor(total / 2) from the start of MaxPool SAME_UPPER and fails for the others), so reprobuild
    refuses, naming the node, instead of silently clamping the padding to 0 as it did. The error's advice,
    auto_pad=VALID, keeps the output shape ceil(size / stride) and matches onnxruntime."""
    opset = 18 if op == "LpPool" else None  # onnxruntime implements LpPool up to version 18
    for shape, kernel, strides in NEGATIVE:
        x = rng.standard_normal(shape).astype(np.float32)
        same = node_model(op, {"x": x}, opset=opset, kernel_shape=kernel, strides=strides, auto_pad=auto_pad)
        with pytest.raises(UnsupportedOpError, match=rf"node '{op}_0' \(op {op}\): auto_pad={auto_pad} asks for a "
                                                     r"negative padding \(-\d+\) .*Use auto_pad=VALID"):
            build_and_run(same, {"x": x})
        valid = node_model(op, {"x": x}, opset=opset, kernel_shape=kernel, strides=strides, auto_pad="VALID")
        got = build_and_run(valid, {"x": x})["y"]
        assert got.shape == (*shape[:2], *(-(-n // s) for n, s in zip(shape[2:], strides)))  # ceil(size / stride)
        want = ort_outputs(valid, {"x": x})["y"]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

"""DFT, STFT, the window functions and MelWeightMatrix (op_signal, _signal_window) against onnxruntime, on fresh
random inputs; float16 (which onnxruntime does not run) against its float32 result."""

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


def _declared(model: onnx.ModelProto, elem_type: int, shape: list[int]) -> onnx.ModelProto:
    """The model with its output y declared: onnx's shape inference cannot type every form (a size input, an
    invalid node), and the ONNX checker needs graph outputs typed."""
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", elem_type, shape))
    return model


def _signal(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("shape", "axis", "attrs", "length"), [
    ((2, 6, 5, 1), 1, {}, None),                                # real -> complex
    ((2, 6, 5, 2), -2, {}, 8),                                  # complex, zero-padded, negative axis
    ((2, 6, 5, 2), 1, {"inverse": 1}, 4),                       # inverse, truncated
    ((2, 6, 5, 1), 2, {"onesided": 1}, None),                   # RFFT
    ((2, 6, 5, 2), 1, {"onesided": 1, "inverse": 1}, None),     # IRFFT, default length 2 * (6 - 1)
    ((2, 6, 5, 2), 0, {"onesided": 1, "inverse": 1}, 3),        # IRFFT of odd length along the batch axis
])
def test_dft_20_against_onnxruntime(backend: str, rng: np.random.Generator, shape: tuple[int, ...], axis: int,
                                    attrs: dict[str, Any], length: int | None) -> None:
    inits = {"axis": np.array(axis, dtype=np.int64)}
    names = ["x", "", "axis"]
    if length is not None:
        inits["dft_length"] = np.array(length, dtype=np.int64)
        names[1] = "dft_length"
    check_op("DFT", {"x": _signal(rng, shape)}, backend=backend, initializers=inits, input_names=names, opset=20,
             rtol=1e-4, atol=1e-4, **attrs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dft_17_axis_attribute_and_float64(backend: str, rng: np.random.Generator) -> None:
    check_op("DFT", {"x": _signal(rng, (3, 4, 7, 2), np.float64)}, backend=backend, opset=17, axis=2, inverse=1)
    check_op("DFT", {"x": _signal(rng, (3, 8, 1))}, backend=backend, opset=17, onesided=1, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dft_float16_against_float32(backend: str, rng: np.random.Generator) -> None:
    x = _signal(rng, (2, 8, 2), np.float16)
    got = build_and_run(node_model("DFT", {"x": x}, opset=17), {"x": x}, backend)["y"]
    want = ort_outputs(node_model("DFT", {"x": x.astype(np.float32)}, opset=17), {"x": x.astype(np.float32)})["y"]
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("channels", "window", "frame_length", "onesided"), [
    (1, None, 8, 1), (1, 6, None, 1), (1, 8, 8, 0), (2, 5, None, 0), (1, None, None, 0)])
def test_stft(backend: str, rng: np.random.Generator, channels: int, window: int | None, frame_length: int | None,
              onesided: int) -> None:
    feeds = {"signal": _signal(rng, (2, 20, channels))}
    names = ["signal", "step", "", ""]
    inits = {"step": np.array(3, dtype=np.int64)}
    if window is not None:
        feeds["window"] = np.hanning(window).astype(np.float32) + 0.1  # a run-time input
        names[2] = "window"
    if frame_length is not None:
        inits["frame_length"] = np.array(frame_length, dtype=np.int64)
        names[3] = "frame_length"
    while not names[-1]:
        names.pop()
    frame = frame_length or window or 20
    frames, bins = (20 - frame) // 3 + 1, frame // 2 + 1 if onesided else frame
    model = _declared(node_model("STFT", feeds, initializers=inits, input_names=names, opset=17, onesided=onesided),
                      TensorProto.FLOAT, [2, frames, bins, 2])
    got = build_and_run(model, feeds, backend)["y"]
    if (window is None and frame_length is None) or channels == 2:
        # onnxruntime lacks the first form, and its 1.30 returns garbage for complex signals: ONNX's reference
        want = ReferenceEvaluator(model).run(None, feeds)[0]
    else:
        want = ort_outputs(model, feeds)["y"]
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("op", ["HannWindow", "HammingWindow", "BlackmanWindow"])
@pytest.mark.parametrize(("periodic", "dtype", "size"), [
    (1, TensorProto.FLOAT, 10), (0, TensorProto.DOUBLE, 7), (0, TensorProto.INT32, 9), (1, TensorProto.FLOAT16, 16),
    (1, TensorProto.UINT8, 4), (1, TensorProto.FLOAT, 1), (0, TensorProto.FLOAT, 1)])
def test_windows(op: str, periodic: int, dtype: int, size: int) -> None:
    """Against onnxruntime, which computes in float32 (hence the tolerance) and has no float16 kernels (compared
    with its float32 result); a symmetric window of one sample is NaN in both."""
    def model(elem_type: int) -> onnx.ModelProto:
        return _declared(node_model(op, {}, initializers={"size": np.array(size, dtype=np.int64)}, opset=17,
                                    periodic=periodic, output_datatype=elem_type), elem_type, [size])

    got = build_and_run(model(dtype), {})["y"]
    want = ort_outputs(model(TensorProto.FLOAT if dtype == TensorProto.FLOAT16 else dtype), {})["y"]
    assert got.dtype == helper.tensor_dtype_to_np_dtype(dtype) and got.shape == want.shape
    if got.dtype.kind in "iu":
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=1e-3, atol=1e-6,
                                   equal_nan=True)


def test_window_size_from_a_run_time_input_must_be_pinned() -> None:
    size = np.array(6, dtype=np.int64)
    model = _declared(node_model("HannWindow", {"size": size}, opset=17), TensorProto.FLOAT, [6])
    got = build_and_run(model, {"size": size}, input_values={"size": size})["y"]
    np.testing.assert_allclose(got, ort_outputs(model, {"size": size})["y"], atol=1e-6)
    with pytest.raises(StaticInputError, match=r"HannWindow.*size"):
        build_and_run(model, {"size": size})


@pytest.mark.parametrize(("bins", "dft_length", "rate", "low", "high", "dtype"), [
    (8, 64, 16000, 0.0, 8000.0, TensorProto.FLOAT), (5, 128, 8000, 125.0, 3800.0, TensorProto.DOUBLE),
    (3, 30, 1000, 10.0, 400.0, TensorProto.FLOAT)])
def test_mel_weight_matrix(bins: int, dft_length: int, rate: int, low: float, high: float, dtype: int) -> None:
    inits = {"bins": np.array(bins, dtype=np.int64), "length": np.array(dft_length, dtype=np.int64),
             "rate": np.array(rate, dtype=np.int64), "low": np.array(low, dtype=np.float32),
             "high": np.array(high, dtype=np.float32)}
    check_op("MelWeightMatrix", {}, initializers=inits, opset=17, output_datatype=dtype)


_ONES = {"x": np.ones((2, 4, 1), np.float32)}
_MEL = {"a": np.array(4), "b": np.array(16), "c": np.array(100), "d": np.array(10.0), "e": np.array(90.0)}


@pytest.mark.parametrize(("op", "feeds", "inits", "names", "attrs", "message"), [
    ("DFT", {"x": np.ones((2, 4, 2), np.float32)}, {}, ["x"], {"onesided": 1}, "needs a real input"),
    ("DFT", _ONES, {}, ["x"], {"onesided": 1, "inverse": 1}, "needs a complex input"),
    ("DFT", _ONES, {}, ["x"], {"axis": 2}, "out of the accepted range"),
    ("DFT", {"x": np.ones((2, 4, 2), np.float32)}, {"n": np.array(4)}, ["x", "n"], {"onesided": 1, "inverse": 1},
     "unique bins"),
    ("STFT", {"x": np.ones((1, 9, 2), np.float32)}, {"step": np.array(2)}, ["x", "step"], {}, "real signal"),
    ("STFT", {"x": np.ones((1, 9, 1), np.float32)}, {"step": np.array(2), "n": np.array(10)}, ["x", "step", "", "n"],
     {}, "do not fit"),
    ("MelWeightMatrix", {}, _MEL, list(_MEL), {}, "outside the 9 bins"),
    ("HannWindow", {}, {"n": np.array(0)}, ["n"], {}, "must be positive"),
    ("HammingWindow", {}, {"n": np.array(1)}, ["n"], {"periodic": 0, "output_datatype": TensorProto.INT32},
     "integer output_datatype"),
])
def test_unsupported_forms_are_typed_errors_naming_the_node(op: str, feeds: dict[str, np.ndarray],
                                                            inits: dict[str, np.ndarray], names: list[str],
                                                            attrs: dict[str, Any], message: str) -> None:
    model = _declared(node_model(op, feeds, initializers=inits, input_names=names, opset=17, **attrs),
                      TensorProto.FLOAT, [1])
    with pytest.raises(ReprobuildError, match=message) as info:
        build_and_run(model, feeds)
    assert op in str(info.value)

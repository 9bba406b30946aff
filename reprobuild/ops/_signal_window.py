"""Window functions (HannWindow, HammingWindow, BlackmanWindow) and MelWeightMatrix: their outputs depend only on
static scalar inputs, so they become constants when the network is parsed (a size that comes from a run-time
input is a StaticInputError: pin it).

A window is w[n] = a0 - a1 cos(2 pi n / N) + a2 cos(4 pi n / N), with N = size when ``periodic`` (the default)
and size - 1 otherwise; a symmetric window of one sample divides 0 by 0 (NaN in ONNX's reference and
onnxruntime), which integer outputs cannot hold and refuse. Values are computed in float64 and rounded once to
``output_datatype`` (default float32). Integer types take the float32 value truncated toward zero, as onnxruntime
(which computes in float32) and a C cast do: a window value that is exactly 1 is 1 whatever rounding the float64
sum had.

MelWeightMatrix follows ONNX's reference (float64): num_mel_bins + 2 points evenly spaced on the mel scale
(mel = 2595 log10(1 + hz / 700)) between the edges, each mapped to the DFT bin floor((dft_length + 1) hz /
sample_rate), and a triangle from each point to the next-but-one. onnxruntime computes the bins in float32;
where the two disagree (a point within rounding of a bin edge) the matrix is ill-defined and refused.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from reprobuild.core.dtypes import FLOATS, INTEGERS, np_dtype
from reprobuild.layers.base import OpError, scalar
from reprobuild.ops._constant_limits import check_constant_size
from reprobuild.ops.base import BuildTimeOp, Node
from reprobuild.ops.onnx_types import dtype_of_elem_type

_OUTPUT_TYPES = INTEGERS + FLOATS


def _output_dtype(node: Node) -> np.dtype[Any]:
    try:
        name = dtype_of_elem_type(int(node.attr("output_datatype")), "output_datatype")
    except OpError as exc:
        raise node.fail(str(exc)) from None
    if name not in _OUTPUT_TYPES:
        raise node.fail(f"output_datatype {name} is not one of {', '.join(_OUTPUT_TYPES)}")
    return np_dtype(name)


def _static_scalar(node: Node, i: int, what: str, kinds: str) -> Any:
    value = np.asarray(node.static(i, what))
    if value.size != 1 or value.dtype.kind not in kinds:
        kind = "an integer" if kinds == "iu" else "a number"
        raise node.fail(f"{what} must be {kind} scalar; got {value.dtype} of shape {list(value.shape)}")
    return scalar(value)


def _round_to(values: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    """float64 values in ``dtype``; integer types truncate the float32 value (see the module docstring)."""
    if dtype.kind in "iu":
        values = np.trunc(values.astype(np.float32))
    return values.astype(dtype)


class _Window(BuildTimeOp):
    versions = (17,)
    dtypes = ("int32", "int64")
    coefficients: ClassVar[tuple[float, float, float]]

    def convert(self, node: Node) -> None:
        size = int(_static_scalar(node, 0, "size", "iu"))
        if size < 1:
            raise node.fail(f"size {size} must be positive (ONNX's shape inference requires it)")
        dtype = _output_dtype(node)
        periodic = int(node.attr("periodic")) != 0
        n_total = size if periodic else size - 1
        if n_total == 0 and dtype.kind in "iu":
            raise node.fail("a symmetric (periodic=0) window of one sample is 0/0 (NaN), which an integer "
                            "output_datatype cannot hold; use periodic=1 or a size above 1")
        check_constant_size(node, (size,), "float64", "the float64 values it computes")
        a0, a1, a2 = self.coefficients
        n = np.arange(size, dtype=np.float64)
        with np.errstate(all="ignore"):
            phase = 2 * math.pi * n / n_total if n_total else n * math.nan  # size 1, symmetric: 0/0
            values = a0 - a1 * np.cos(phase) + a2 * np.cos(2 * phase)
        node.define_constant(_round_to(values, dtype))


class HannWindow(_Window):
    op = "HannWindow"
    coefficients = (0.5, 0.5, 0.0)


class HammingWindow(_Window):
    op = "HammingWindow"
    coefficients = (25 / 46, 21 / 46, 0.0)


class BlackmanWindow(_Window):
    op = "BlackmanWindow"
    coefficients = (0.42, 0.5, 0.08)


def _mel_points(count: int, dft_length: int, sample_rate: int, low: float, high: float, ftype: Any) -> np.ndarray:
    """The DFT bin of each of ``count`` points evenly spaced on the mel scale, computed in ``ftype``."""
    f = np.dtype(ftype).type
    low_mel = f(2595) * np.log10(f(1) + f(low) / f(700))
    high_mel = f(2595) * np.log10(f(1) + f(high) / f(700))
    step = (high_mel - low_mel) / f(count)
    mels = np.arange(count).astype(ftype) * step + low_mel
    hz = f(700) * (np.power(f(10), mels / f(2595)) - f(1))
    return np.floor((f(dft_length + 1) * hz) / f(sample_rate)).astype(np.int64)


class MelWeightMatrix(BuildTimeOp):
    op, versions = "MelWeightMatrix", (17,)
    num_inputs = (5, 5)
    dtypes = ("int32", "int64")

    def convert(self, node: Node) -> None:
        bins = int(_static_scalar(node, 0, "num_mel_bins", "iu"))
        dft_length = int(_static_scalar(node, 1, "dft_length", "iu"))
        rate = int(_static_scalar(node, 2, "sample_rate", "iu"))
        low = float(_static_scalar(node, 3, "lower_edge_hertz", "iuf"))
        high = float(_static_scalar(node, 4, "upper_edge_hertz", "iuf"))
        dtype = _output_dtype(node)
        if bins < 1 or dft_length < 1 or rate < 1:
            raise node.fail(f"num_mel_bins ({bins}), dft_length ({dft_length}) and sample_rate ({rate}) must be "
                            "positive")
        if not 0 <= low < high:
            raise node.fail(f"the edges must satisfy 0 <= lower_edge_hertz < upper_edge_hertz; got {low} and {high}")
        spectrum = dft_length // 2 + 1
        for name, hz in (("lower_edge_hertz", low), ("upper_edge_hertz", high)):
            index = math.floor((dft_length + 1) * hz / rate)
            if not 0 <= index < spectrum:
                raise node.fail(f"{name}={hz} maps to DFT bin {index}, outside the {spectrum} bins of dft_length "
                                f"{dft_length} at sample_rate {rate}")
        check_constant_size(node, (spectrum, bins), "float64", "the float64 values it computes")
        points = _mel_points(bins + 2, dft_length, rate, low, high, np.float64)
        if not np.array_equal(points, _mel_points(bins + 2, dft_length, rate, low, high, np.float32)):
            raise node.fail("a mel point falls within rounding of a DFT bin edge, so the matrix differs between "
                            "float64 (ONNX's reference) and float32 (onnxruntime) arithmetic; move the edges slightly")
        node.define_constant(_round_to(_triangles(points, bins, spectrum), dtype))


def _triangles(points: np.ndarray, bins: int, spectrum: int) -> np.ndarray:
    out = np.zeros((spectrum, bins), dtype=np.float64)
    for i in range(bins):
        left, center, right = (int(p) for p in points[i: i + 3])
        if center == left:
            out[center, i] = 1.0
        else:
            for j in range(left, center + 1):
                out[j, i] = (j - left) / (center - left)
        for j in range(center, right):
            out[j, i] = (right - j) / (right - center)
    return out

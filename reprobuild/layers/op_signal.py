"""Signal processing: DFT and STFT here; the window functions and MelWeightMatrix, all known when the network is
parsed, in ``_signal_window``.

ONNX holds complex numbers as a last dimension of 2 (real, imaginary); a real signal has a last dimension of 1.
FFTs run with ``xp.fft`` in the input's precision: complex128 for float64, complex64 for float32 (float16 and
bfloat16 too, rounded once at the end), as ONNX's reference (NumPy 2) and onnxruntime compute them. ONNX's
test_dft_inverse data carry NumPy's float32 rounding (1.9e-7 where the exact result is 0, tolerance 1e-7): only
NumPy's own float32 FFT meets them, so those two cases pass on the CPU and fail with cuFFT, in either precision.
ONNX subtleties:

- DFT's ``axis`` was an attribute (default 1) in opset 17 and is an optional input (default -2) from 20; either
  way it counts the complex dimension, may be negative, and is canonical non-negative. ``dft_length`` (optional
  input) truncates or zero-pads the signal; its default is the axis' length, except for the inverse one-sided
  transform (IRFFT), where it is 2 * (length - 1).
- onesided=1 with inverse=0 is the RFFT (real input only: floor(n/2)+1 bins); with inverse=1 the IRFFT (complex,
  one-sided input of exactly dft_length // 2 + 1 bins, real output of dft_length samples). An IRFFT that would
  truncate or zero-pad the bins is refused: ONNX's reference (numpy's irfft) and onnxruntime disagree there.
- STFT frames the signal (frames = (length - frame_length) // frame_step + 1), multiplies each frame by the window
  (all ones when omitted) and takes its DFT; onesided defaults to 1 and needs a real signal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from reprobuild.core.dtypes import FLOATS
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType


def _as_complex(xp: Any, x: Any) -> Any:
    """(..., 1 or 2) real layout -> complex array of the leading dimensions: complex128 for float64, complex64
    (single precision) for the other float types."""
    ctype = xp.complex128 if x.dtype == xp.float64 else xp.complex64
    if x.shape[-1] == 1:
        return x[..., 0].astype(ctype)
    return x[..., 0].astype(ctype) + x[..., 1].astype(ctype) * ctype(1j)


def _real_layout(xp: Any, z: Any, dtype: Any) -> Any:
    return xp.stack([z.real, z.imag], axis=-1).astype(dtype)


class DFT(LayerDef):
    op = "DFT"
    version = 2
    num_inputs = (1, 3)
    dtypes = FLOATS

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        x, axis, length = inputs[0], int(attrs["axis"]), int(attrs["length"])
        if x.rank < 2 or x.shape[-1] not in (1, 2) or not 0 <= axis <= x.rank - 2:
            raise OpError(f"input {list(x.shape)} and axis {axis} do not fit [..., signal..., 1 or 2]")
        shape = list(x.shape)
        if attrs["onesided"] and attrs["inverse"]:
            shape[axis], shape[-1] = length, 1
        else:
            shape[axis], shape[-1] = (length // 2 + 1 if attrs["onesided"] else length), 2
        return [TensorType(tuple(shape), x.dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x = inputs[0]
        axis, length = int(attrs["axis"]), int(attrs["length"])
        z = _as_complex(xp, x)
        if attrs["inverse"] and attrs["onesided"]:
            return [xp.fft.irfft(z, n=length, axis=axis)[..., None].astype(x.dtype)]
        y = (xp.fft.ifft if attrs["inverse"] else xp.fft.fft)(z, n=length, axis=axis)
        if attrs["onesided"]:
            y = y[(slice(None),) * axis + (slice(0, length // 2 + 1),)]
        return [_real_layout(xp, y, x.dtype)]


class STFT(LayerDef):
    op = "STFT"
    version = 2
    num_inputs = (2, 4)
    dtypes = FLOATS

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        x, frame, step = inputs[0], int(attrs["frame_length"]), int(attrs["frame_step"])
        if x.rank != 3 or x.shape[-1] not in (1, 2) or not 1 <= frame <= x.shape[1]:
            raise OpError(f"signal {list(x.shape)} does not fit frames of {frame}")
        if attrs["window"] and (inputs[1].shape != (frame,) or inputs[1].dtype != x.dtype):
            raise OpError(f"window is {list(inputs[1].shape)} {inputs[1].dtype}; expected [{frame}] {x.dtype}")
        frames = (x.shape[1] - frame) // step + 1
        bins = frame // 2 + 1 if attrs["onesided"] else frame
        return [TensorType((x.shape[0], frames, bins, 2), x.dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x = inputs[0]
        frame, step = int(attrs["frame_length"]), int(attrs["frame_step"])
        frames = (x.shape[1] - frame) // step + 1
        index = (np.arange(frames) * step)[:, None] + np.arange(frame)[None, :]
        z = _as_complex(xp, x)[:, xp.asarray(index)]  # (batch, frames, frame)
        if attrs["window"]:
            z = z * inputs[1].astype(z.real.dtype)[None, None, :]
        y = xp.fft.fft(z, axis=-1)
        if attrs["onesided"]:
            y = y[..., : frame // 2 + 1]
        return [_real_layout(xp, y, x.dtype)]


LAYERS = (DFT(), STFT())

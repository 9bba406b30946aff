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
from reprobuild.ops._signal_window import BlackmanWindow, HammingWindow, HannWindow, MelWeightMatrix
from reprobuild.ops.base import Attrs, Node, OpDef, OpError, TensorType, scalar


def _as_complex(xp: Any, x: Any) -> Any:
    """(..., 1 or 2) real layout -> complex array of the leading dimensions: complex128 for float64, complex64
    (single precision) for the other float types."""
    ctype = xp.complex128 if x.dtype == xp.float64 else xp.complex64
    if x.shape[-1] == 1:
        return x[..., 0].astype(ctype)
    return x[..., 0].astype(ctype) + x[..., 1].astype(ctype) * ctype(1j)


def _real_layout(xp: Any, z: Any, dtype: Any) -> Any:
    return xp.stack([z.real, z.imag], axis=-1).astype(dtype)


def _static_int(node: Node, i: int, what: str) -> int:
    value = np.asarray(node.static(i, what))
    if value.size != 1 or value.dtype.kind not in "iu":
        raise node.fail(f"{what} must be one integer; got {value.dtype} of shape {list(value.shape)}")
    return int(scalar(value))


class DFT(OpDef):
    op, versions = "DFT", (17, 20)
    version = 2
    num_inputs = (1, 3)
    dtypes = FLOATS

    def convert(self, node: Node) -> None:
        x = node.input(0)
        assert x is not None
        if x.rank < 2 or x.shape[-1] not in (1, 2):
            raise node.fail(f"input should be [..., signal..., 1 or 2] (real or complex); got {list(x.shape)}")
        if node.version >= 20:
            axis = _static_int(node, 2, "axis") if node.input(2) is not None else -2
        else:
            axis = int(node.attr("axis"))
        if not (-x.rank <= axis <= -2 or 0 <= axis <= x.rank - 2):
            raise node.fail(f"axis {axis} is out of the accepted range [-{x.rank}, -2] U [0, {x.rank - 2}] for an "
                            f"input of rank {x.rank} (the last dimension holds real and imaginary parts)")
        axis %= x.rank
        inverse, onesided = int(node.attr("inverse") != 0), int(node.attr("onesided") != 0)
        complex_in = x.shape[-1] == 2
        if onesided and not inverse and complex_in:
            raise node.fail("onesided=1 (RFFT) needs a real input (last dimension 1); this one is complex")
        if onesided and inverse and not complex_in:
            raise node.fail("onesided=1 with inverse=1 (IRFFT) needs a complex input (last dimension 2); this one "
                            "is real")
        if node.input(1) is not None:
            length = _static_int(node, 1, "dft_length")
        else:
            length = 2 * (x.shape[axis] - 1) if onesided and inverse else x.shape[axis]
        if length < 1:
            raise node.fail(f"dft_length {length} must be at least 1")
        if onesided and inverse and x.shape[axis] != length // 2 + 1:
            raise node.fail(f"the IRFFT of {x.shape[axis]} bins to dft_length {length} (which has {length // 2 + 1} "
                            "unique bins) truncates or zero-pads the spectrum, where ONNX's reference (numpy's "
                            "irfft) and onnxruntime disagree; give exactly dft_length // 2 + 1 bins")
        node.emit({"axis": axis, "length": length, "inverse": inverse, "onesided": onesided}, inputs=[0])

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


class STFT(OpDef):
    op, versions = "STFT", (17,)
    version = 2
    num_inputs = (2, 4)
    dtypes = FLOATS

    def convert(self, node: Node) -> None:
        x, window = node.input(0), node.input(2)
        assert x is not None
        if x.rank != 3 or x.shape[-1] not in (1, 2):
            raise node.fail(f"signal should be [batch, length, 1 or 2]; got {list(x.shape)}")
        step = _static_int(node, 1, "frame_step")
        if window is not None and window.rank != 1:
            raise node.fail(f"window should be 1-D; got shape {list(window.shape)}")
        if node.input(3) is not None:
            frame = _static_int(node, 3, "frame_length")
            if window is not None and window.shape[0] != frame:
                raise node.fail(f"frame_length {frame} differs from the window's length {window.shape[0]}")
        else:
            frame = window.shape[0] if window is not None else x.shape[1]
        onesided = int(node.attr("onesided") != 0)
        if onesided and x.shape[-1] == 2:
            raise node.fail("onesided=1 needs a real signal (last dimension 1); set onesided=0 for a complex one")
        if step < 1 or frame < 1 or frame > x.shape[1]:
            raise node.fail(f"frame_step {step} and frame_length {frame} do not fit a signal of length "
                            f"{x.shape[1]} (both must be >= 1 and frame_length <= the length)")
        attrs = {"frame_step": step, "frame_length": frame, "onesided": onesided, "window": int(window is not None)}
        node.emit(attrs, inputs=[0, 2] if window is not None else [0])

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


OPS = (BlackmanWindow(), DFT(), HammingWindow(), HannWindow(), MelWeightMatrix(), STFT())

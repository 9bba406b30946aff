"""The ONNX half of :mod:`reprobuild.layers.op_signal` (whose docstring says what the layers compute): the ONNX versions
each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

import numpy as np

from reprobuild.layers import op_signal as layer
from reprobuild.layers.base import scalar
from reprobuild.ops._signal_window import BlackmanWindow, HammingWindow, HannWindow, MelWeightMatrix
from reprobuild.ops.base import Node, OpDef


def _static_int(node: Node, i: int, what: str) -> int:
    value = np.asarray(node.static(i, what))
    if value.size != 1 or value.dtype.kind not in "iu":
        raise node.fail(f"{what} must be one integer; got {value.dtype} of shape {list(value.shape)}")
    return int(scalar(value))


class DFT(OpDef, layer.DFT):
    versions = (17, 20)

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


class STFT(OpDef, layer.STFT):
    versions = (17,)

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


OPS = (BlackmanWindow(), DFT(), HammingWindow(), HannWindow(), MelWeightMatrix(), STFT())

"""Resize (opsets 10 to 19) and the deprecated Upsample, as one canonical layer: ``Resize``.

Every form is resolved when the network is parsed: ``scales`` or ``sizes`` (build-time inputs), ``axes`` and
``keep_aspect_ratio_policy`` become the output shape ``sizes`` and the per-axis ``scales`` the coordinate
transform divides by; ``roi`` (only read for tf_crop_and_resize) becomes ``roi`` begins then ends with its dtype
``roi_dtype``; ``axes`` lists the axes actually resized, in the order they are resized (identity axes dropped, as
the ONNX reference does). Attributes that do not apply to the mode take their defaults. Resize 10 and Upsample
are asymmetric, flooring nearest, and linear with edge clamping, as onnxruntime runs them.

The semantics are ``onnx.reference``'s (its test data are made with it; see ``_nn_resize``). That includes
align_corners and tf_crop_and_resize from scales dividing by the fractional output length ``scale * in``, which
the ONNX authors confirmed as intended (onnx/onnx#2462) though onnxruntime divides by the integer length. Where
the spec itself disagrees with the reference, or the reference is ambiguous, the form is refused rather than
guessed: pytorch_half_pixel or tf_crop_and_resize to one element where the reference's fractional length is not
exactly 1, pytorch_half_pixel to one element with cubic or antialias (the reference samples at -0.5, the spec at
0), tf_crop_and_resize from scales with a partial roi (the spec scales the roi's length, the reference the whole
axis), nearest downsampling in Resize 10 (onnxruntime rounds up, later Resizes' floor mode down), and linear or
cubic on integer tensors (onnxruntime truncates, the reference rounds to nearest even).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from reprobuild.core.dtypes import FLOATS, NUMERIC
from reprobuild.layers._nn_resize import axis_plan
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType
from reprobuild.layers.families import float_compute_type

_MODES = ("nearest", "linear", "cubic")


_TRANSFORMS = ("align_corners", "asymmetric", "tf_half_pixel_for_nn", "pytorch_half_pixel", "half_pixel",
               "half_pixel_symmetric", "tf_crop_and_resize")


_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _check_layer(attrs: Attrs, x: TensorType) -> None:
    """What the run reads and the output shape does not tell: a scale and a roi pair per axis, the resized ``axes``
    distinct axes of the input, every other axis kept at the input's size (a layer whose recorded sizes contradict
    its input would compute another shape than it declares), and modes the interpolation knows."""
    r = x.rank
    if len(attrs["scales"]) != r or len(attrs["roi"]) != 2 * r:
        raise OpError(f"scales {list(attrs['scales'])} and roi {list(attrs['roi'])} need {r} and {2 * r} values "
                      f"for the rank-{r} input")
    axes = list(attrs["axes"])
    if len(set(axes)) != len(axes) or not all(0 <= a < r for a in axes):
        raise OpError(f"axes {axes} are not distinct axes of the rank-{r} input (0 to {r - 1})")
    for a in range(r):
        if a not in axes and attrs["sizes"][a] != x.shape[a]:
            raise OpError(f"axis {a} is not resized (axes {axes}), so its output size is the input's "
                          f"{x.shape[a]}, not {attrs['sizes'][a]}")
    if (attrs["mode"] not in _MODES or attrs["nearest_mode"] not in _NEAREST_MODES
            or attrs["coordinate_transformation_mode"] not in _TRANSFORMS):
        raise OpError(f"mode {attrs['mode']!r}, nearest_mode {attrs['nearest_mode']!r} or "
                      f"coordinate_transformation_mode {attrs['coordinate_transformation_mode']!r} is not one "
                      "reprobuild knows")


class Resize(LayerDef):
    op = "Resize"
    version = 2
    num_inputs = (1, 4)
    dtypes = (*NUMERIC, "bool")

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        x = inputs[0]
        if len(attrs["sizes"]) != x.rank:
            raise OpError(f"the output shape {list(attrs['sizes'])} does not have the input's rank {x.rank}")
        _check_layer(attrs, x)
        if attrs["mode"] != "nearest" and x.dtype not in FLOATS:
            raise OpError(f"{attrs['mode']} resize of {x.dtype}: onnxruntime truncates the interpolated values, "
                          "the ONNX reference rounds them to nearest even; Cast to a float type first")
        if attrs["coordinate_transformation_mode"] == "tf_crop_and_resize" and x.dtype == "bool":
            raise OpError("tf_crop_and_resize of bool: the float extrapolation_value has no bool meaning")
        return [TensorType(tuple(attrs["sizes"]), x.dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x = inputs[0]
        nearest = attrs["mode"] == "nearest"
        data = x if nearest else x.astype(float_compute_type(xp, x), copy=False)
        r = x.ndim
        for axis in attrs["axes"]:
            plan = axis_plan(attrs["mode"], attrs["coordinate_transformation_mode"], attrs["nearest_mode"],
                             float(attrs["cubic_coeff_a"]), int(attrs["exclude_outside"]), int(attrs["antialias"]),
                             float(attrs["scales"][axis]), int(data.shape[axis]), int(attrs["sizes"][axis]),
                             (float(attrs["roi"][axis]), float(attrs["roi"][r + axis])), str(attrs["roi_dtype"]))
            out, taps = plan.index.shape
            if plan.weights is None:
                data = xp.take(data, xp.asarray(plan.index[:, 0]), axis=axis)
            else:
                gathered = xp.take(data, xp.asarray(plan.index.reshape(-1)), axis=axis)
                gathered = gathered.reshape((*data.shape[:axis], out, taps, *data.shape[axis + 1:]))
                weights = xp.asarray(plan.weights, dtype=data.dtype)
                shape = (out,) + (1,) * (r - axis - 1)
                data = xp.take(gathered, 0, axis=axis + 1) * weights[:, 0].reshape(shape)
                for t in range(1, taps):
                    data = data + xp.take(gathered, t, axis=axis + 1) * weights[:, t].reshape(shape)
            if plan.outside is not None and plan.outside.any():
                fill = xp.asarray(_fill_value(float(attrs["extrapolation_value"]), np.dtype(data.dtype)))
                data = xp.where(xp.asarray(plan.outside.reshape((out,) + (1,) * (r - axis - 1))), fill, data)
        return [data.astype(x.dtype, copy=True)]


def _fill_value(value: float, dtype: np.dtype[Any]) -> np.ndarray:
    """extrapolation_value in ``dtype``: rounded to nearest even and clipped for integers (the reference's
    saturating cast)."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.asarray(np.clip(np.round(value), info.min, info.max)).astype(dtype)
    return np.asarray(value, dtype=dtype)


LAYERS = (Resize(),)

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

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from reprobuild.core.dtypes import FLOATS, NUMERIC
from reprobuild.ops._nn_resize import axis_plan
from reprobuild.ops.base import Attrs, Node, OpDef, OpError, TensorType, axes_in_range, floats, ints
from reprobuild.ops.families import float_compute_type

_MODES = ("nearest", "linear", "cubic")
_TRANSFORMS = ("align_corners", "asymmetric", "tf_half_pixel_for_nn", "pytorch_half_pixel", "half_pixel",
               "half_pixel_symmetric", "tf_crop_and_resize")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
_COMMON_CTM = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_crop_and_resize")
#: coordinate_transformation_mode values each Resize version defines
_CTM = {11: (*_COMMON_CTM, "tf_half_pixel_for_nn"), 13: _COMMON_CTM, 18: _COMMON_CTM,
        19: (*_COMMON_CTM, "half_pixel_symmetric")}


def resize_attrs(shape: Sequence[int], *, mode: str, ctm: str, nearest_mode: str = "round_prefer_floor",
                 cubic_a: float = -0.75, exclude_outside: int = 0, extrapolation: float = 0.0, antialias: int = 0,
                 axes: Sequence[int], scales: Sequence[float] | None = None, sizes: Sequence[int] | None = None,
                 policy: str = "stretch", roi: Sequence[float] | None = None, roi_dtype: str = "float32"
                 ) -> dict[str, Any]:
    """The canonical attributes of a resize of ``shape``; an OpError for a form reprobuild does not run."""
    r = len(shape)
    antialias, exclude_outside = int(bool(antialias)), int(bool(exclude_outside))
    if mode not in _MODES:
        raise OpError(f"mode={mode!r} is not one of {', '.join(_MODES)}")
    if mode == "nearest" and nearest_mode not in _NEAREST_MODES:
        raise OpError(f"nearest_mode={nearest_mode!r} is not one of {', '.join(_NEAREST_MODES)}")
    if mode == "nearest" and (antialias or exclude_outside):
        raise OpError("antialias and exclude_outside apply to linear and cubic only; onnxruntime and the ONNX "
                      "reference both reject them with mode=nearest")
    if min(shape, default=1) < 1:
        raise OpError(f"cannot resize an empty tensor of shape {list(shape)}")
    given = scales if scales is not None else sizes
    if given is None or len(given) != len(axes):
        raise OpError(f"needs scales or sizes with one value per resized axis ({len(axes)}); got "
                      f"{'none' if given is None else len(given)}")
    scale, out = [1.0] * r, list(shape)
    if scales is not None:
        if not all(math.isfinite(s) and s > 0 for s in scales):
            raise OpError(f"scales {list(scales)} must be positive and finite")
        for a, s in zip(axes, scales):
            scale[a] = s
        if max(scale[d] * shape[d] for d in range(r)) >= 2.0 ** 62:
            raise OpError(f"scales {list(scales)} make the output of {list(shape)} too large")
        out = [int(scale[d] * shape[d]) for d in range(r)]
    else:
        assert sizes is not None
        for a, n in zip(axes, sizes):
            out[a] = n
        if min(out) < 1:
            raise OpError(f"sizes {list(sizes)} must be positive")
        scale = [out[d] / shape[d] for d in range(r)]
        if policy not in ("stretch", "not_larger", "not_smaller"):
            raise OpError(f"keep_aspect_ratio_policy={policy!r} is not one of stretch, not_larger, not_smaller")
        if policy != "stretch":
            chosen = (min if policy == "not_larger" else max)(scale[a] for a in axes)
            scale = [chosen if d in axes else 1.0 for d in range(r)]
            out = [int(chosen * shape[d] + 0.5) if d in axes else shape[d] for d in range(r)]
    if min(out) < 1:
        raise OpError(f"the output shape {out} (input {list(shape)}, scales {scale}) has an empty dimension")
    crop = ctm == "tf_crop_and_resize"
    full_roi = [0.0] * r + [1.0] * r
    if crop:
        if roi is None or len(roi) != 2 * len(axes) or not all(math.isfinite(v) for v in roi):
            raise OpError(f"tf_crop_and_resize needs a finite roi of {2 * len(axes)} values (begins, then ends); "
                          f"got {None if roi is None else list(roi)}")
        for i, a in enumerate(axes):
            full_roi[a], full_roi[r + a] = roi[i], roi[len(axes) + i]
    order = [a for a in axes if not (math.isclose(scale[a], 1.0) and out[a] == shape[a] and (
        not crop or (full_roi[a] == 0.0 and math.isclose(full_roi[r + a], 1.0))))]
    for a in order:
        _check_axis(a, ctm, mode, antialias, scale[a], shape[a], out[a], scales is not None,
                    (full_roi[a], full_roi[r + a]))
    return {"antialias": antialias if mode != "nearest" else 0, "axes": tuple(order),
            "coordinate_transformation_mode": ctm, "cubic_coeff_a": cubic_a if mode == "cubic" else -0.75,
            "exclude_outside": exclude_outside, "extrapolation_value": extrapolation if crop else 0.0,
            "mode": mode, "nearest_mode": nearest_mode if mode == "nearest" else "round_prefer_floor",
            "roi": tuple(full_roi) if crop else (0.0,) * r + (1.0,) * r, "roi_dtype": roi_dtype if crop else "float32",
            "scales": tuple(scale), "sizes": tuple(out)}


def _check_axis(a: int, ctm: str, mode: str, antialias: int, scale: float, n_in: int, n_out: int, from_scales: bool,
                roi: tuple[float, float]) -> None:
    """Refuse the forms of one resized axis where the ONNX reference, the spec and onnxruntime disagree."""
    width = scale * n_in
    if ctm == "tf_crop_and_resize" and from_scales and roi != (0.0, 1.0):
        raise OpError(f"tf_crop_and_resize from scales with roi {list(roi)} on axis {a}: the spec scales the roi's "
                      "length, the ONNX reference and onnxruntime the whole axis; give sizes instead")
    if n_out == 1 and ctm in ("pytorch_half_pixel", "tf_crop_and_resize") and width != 1:
        raise OpError(f"{ctm} to one element along axis {a} from {n_in}: the ONNX reference's fractional length "
                      f"{width} is not 1, so it leaves the spec's one-element rule; resize with other sizes")
    if n_out == 1 and ctm == "pytorch_half_pixel" and (mode == "cubic" or antialias):
        raise OpError(f"pytorch_half_pixel to one element along axis {a} with {mode}"
                      f"{' and antialias' if antialias else ''}: the ONNX reference samples at -0.5, the spec "
                      "and onnxruntime at 0")


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


class Resize(OpDef):
    op = "Resize"
    version = 2
    versions: ClassVar[tuple[int, ...]] = (10, 11, 13, 18, 19)
    num_inputs = (1, 4)
    dtypes = (*NUMERIC, "bool")

    def convert(self, node: Node) -> None:
        x = node.input(0)
        assert x is not None
        if node.version == 10:
            if node.num_inputs != 2:
                raise node.fail(f"Resize 10 takes X and scales; got {node.num_inputs} inputs")
            node.emit(legacy_attrs(x.shape, str(node.attr("mode")), floats(node.static(1, "scales")), "Resize 10"),
                      inputs=[0])
            return
        ctm = str(node.attr("coordinate_transformation_mode"))
        allowed = _CTM[max(v for v in _CTM if v <= node.version)]
        if ctm not in allowed:
            raise node.fail(f"coordinate_transformation_mode={ctm!r} is not one Resize {node.version} defines: "
                            f"{', '.join(allowed)}")
        axes = tuple(range(x.rank))
        if node.version >= 18 and node.has_attr("axes"):
            axes = axes_in_range(ints(node.attr("axes")), x.rank)
        scales = floats(node.static(2, "scales")) if self._present(node, 2) else None
        sizes = ints(node.static(3, "sizes")) if self._present(node, 3) else None
        if scales is not None and sizes is not None:
            raise node.fail("both scales and sizes are given; ONNX allows only one")
        roi, roi_dtype = None, "float32"
        roi_type = node.input(1)
        if ctm == "tf_crop_and_resize" and roi_type is not None and roi_type.size > 0:
            if roi_type.dtype not in ("float16", "float32", "float64"):
                raise node.fail(f"roi is {roi_type.dtype}; ONNX allows float16, float32, float64")
            roi, roi_dtype = floats(node.static(1, "roi")), roi_type.dtype
        node.emit(resize_attrs(
            x.shape, mode=str(node.attr("mode")), ctm=ctm, nearest_mode=str(node.attr("nearest_mode")),
            cubic_a=float(node.attr("cubic_coeff_a")), exclude_outside=int(node.attr("exclude_outside")),
            extrapolation=float(node.attr("extrapolation_value")),
            antialias=int(node.attr("antialias")) if node.version >= 18 else 0, axes=axes, scales=scales,
            sizes=sizes, policy=str(node.attr("keep_aspect_ratio_policy")) if node.version >= 18 else "stretch",
            roi=roi, roi_dtype=roi_dtype), inputs=[0])

    @staticmethod
    def _present(node: Node, i: int) -> bool:
        """Whether optional input ``i`` is given and not empty (an empty scales stands for "use sizes")."""
        t = node.input(i)
        return t is not None and t.size > 0

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


def legacy_attrs(shape: Sequence[int], mode: str, scales: Sequence[float], what: str) -> dict[str, Any]:
    """Resize 10 and Upsample: one scale per axis, asymmetric coordinates, nearest rounding down."""
    if mode not in ("nearest", "linear"):
        raise OpError(f"mode={mode!r}; {what} has nearest and linear")
    if len(scales) != len(shape):
        raise OpError(f"scales {list(scales)} should have one value per input dimension ({len(shape)})")
    if what == "Upsample" and min(scales) < 1:
        raise OpError(f"scales {list(scales)}: Upsample only enlarges (every scale >= 1)")
    if mode == "nearest" and min(scales) < 1:
        raise OpError(f"scales {list(scales)}: nearest downsampling in {what} is ambiguous (onnxruntime rounds the "
                      "coordinates up, later Resize versions' floor mode down); use Resize 11 or later")
    return resize_attrs(shape, mode=mode, ctm="asymmetric", nearest_mode="floor", axes=tuple(range(len(shape))),
                        scales=scales)


class Upsample(Resize):
    """Emitted as the canonical Resize layer."""

    op, lowered_to = "Upsample", "Resize"
    versions: ClassVar[tuple[int, ...]] = (7, 9, 10)
    num_inputs = (1, 2)

    def convert(self, node: Node) -> None:
        x = node.input(0)
        assert x is not None
        if node.version < 9:
            if not node.has_attr("scales") or node.num_inputs != 1:
                raise node.fail("Upsample 7 takes one input and the scales attribute")
            scales = floats(node.attr("scales"))
        else:
            if node.num_inputs != 2:
                raise node.fail(f"Upsample {node.version} takes X and scales; got {node.num_inputs} inputs")
            scales = floats(node.static(1, "scales"))
        node.emit(legacy_attrs(x.shape, str(node.attr("mode")), scales, "Upsample"), inputs=[0], op="Resize")


OPS = (Resize(), Upsample())

"""The ONNX half of :mod:`reprobuild.layers.op_resize` (whose docstring says what the layers compute): the ONNX versions
each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

from reprobuild.layers import op_resize as layer
from reprobuild.layers.base import OpError, axes_in_range, floats, ints
from reprobuild.layers.op_resize import _MODES, _NEAREST_MODES
from reprobuild.ops.base import Node, OpDef

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


class Resize(OpDef, layer.Resize):
    versions: ClassVar[tuple[int, ...]] = (10, 11, 13, 18, 19)

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

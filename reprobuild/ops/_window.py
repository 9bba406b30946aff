"""The ONNX half of :mod:`reprobuild.layers._window` (whose docstring says what the layers compute): the ONNX versions
each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from reprobuild.layers.base import OpError, ints
from reprobuild.ops.base import Node

NegativeSame = Literal["clamp", "refuse"]


#: Pooling with a negative SAME padding has no agreed answer, so a pool refuses rather than pick one silently.
#: onnxruntime refuses MaxPool ("padding values must be non-negative"); for AveragePool and LpPool it crops
#: trunc(total / 2) elements from the start under SAME_UPPER and none under SAME_LOWER. ONNX's reference evaluator
#: crops floor(total / 2) from the start of MaxPool SAME_UPPER (so the two differ when the total is odd), returns a
#: shape its own shape inference contradicts for some SAME_LOWER cases, and fails for AveragePool and LpPool.
_NEGATIVE_SAME = (
    "auto_pad={auto_pad} asks for a negative padding ({total}) along spatial dimension {dim} (size {size}, kernel "
    "span {span}, stride {stride}); for pooling the spec does not say where a negative padding goes, and "
    "onnxruntime and ONNX's reference evaluator disagree (onnxruntime refuses MaxPool). Use auto_pad=VALID, which "
    "gives the same output shape here, ceil(size / stride), with windows from the first element, or explicit pads")


def resolve_window(node: Node, spatial: Sequence[int], kernel: Sequence[int], *, negative_same: NegativeSame,
                   with_dilations: bool = True) -> dict[str, tuple[int, ...]]:
    """Explicit ``pads`` (begins then ends), ``strides`` and ``dilations`` of a window over ``spatial``, from
    the node's ``auto_pad``, ``pads``, ``strides`` and ``dilations`` attributes.

    ``auto_pad=SAME_*`` with a stride larger than the (dilated) kernel can ask for a negative total padding, whose
    split the spec leaves open. ``negative_same`` says what the op does then: "clamp" pads nothing (the windows
    start at the first element, the output keeps ceil(size / stride) elements: what onnxruntime and ONNX's
    reference evaluator both compute for Conv), "refuse" is an OpError (pooling, where the two disagree)."""
    nd = len(spatial)
    if len(kernel) != nd:
        raise OpError(f"kernel_shape {list(kernel)} has {len(kernel)} dimensions; the input has {nd} spatial ones")
    strides = ints(node.attr("strides")) if node.has_attr("strides") else (1,) * nd
    dilations = (ints(node.attr("dilations")) if with_dilations and node.has_attr("dilations") else (1,) * nd)
    auto_pad = node.attr("auto_pad") if node.has_attr("auto_pad") else "NOTSET"
    for name, values in (("strides", strides), ("dilations", dilations)):
        if len(values) != nd:
            raise OpError(f"{name} {list(values)} should have {nd} values, one per spatial dimension")
    if min(strides, default=1) < 1 or min(dilations, default=1) < 1 or min(kernel, default=1) < 1:
        raise OpError(f"strides {list(strides)}, dilations {list(dilations)} and kernel_shape {list(kernel)} must "
                      "be positive (auto_pad divides by the strides)")
    if auto_pad == "NOTSET":
        pads = ints(node.attr("pads")) if node.has_attr("pads") else (0,) * (2 * nd)
    elif auto_pad == "VALID":
        pads = (0,) * (2 * nd)
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for i in range(nd):
            out = math.ceil(spatial[i] / strides[i])
            total = (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - spatial[i]
            if total < 0 and negative_same == "refuse":
                raise OpError(_NEGATIVE_SAME.format(auto_pad=auto_pad, total=total, dim=i, size=spatial[i],
                                                    span=(kernel[i] - 1) * dilations[i] + 1, stride=strides[i]))
            total = max(0, total)
            small, large = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else large)
            end.append(large if auto_pad == "SAME_UPPER" else small)
        pads = (*begin, *end)
    else:
        raise OpError(f"auto_pad={auto_pad!r} is not one of NOTSET, VALID, SAME_UPPER, SAME_LOWER")
    if len(pads) != 2 * nd:
        raise OpError(f"pads {list(pads)} should have {2 * nd} values (begins, then ends)")
    if min(strides) < 1 or min(dilations) < 1 or min(pads) < 0 or min(kernel) < 1:
        raise OpError(f"invalid window: kernel {list(kernel)}, strides {list(strides)}, pads {list(pads)}, "
                      f"dilations {list(dilations)}")
    return {"pads": pads, "strides": strides, "dilations": dilations}

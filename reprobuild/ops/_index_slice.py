"""The ONNX half of :mod:`reprobuild.layers._index_slice` (whose docstring says what the layers compute): the ONNX
versions each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reprobuild.core import symbolic
from reprobuild.core.symbolic import SymInt
from reprobuild.layers import _index_slice as layer
from reprobuild.layers._index_slice import _ceil_div
from reprobuild.layers.base import OpError, axes_in_range, axis_in_range, ints
from reprobuild.ops.attr import ABSENT, Attr
from reprobuild.ops.base import Node, OpDef

#: Ends that onnxruntime reads as "to the beginning" when the step is negative (ONNX: clamped to the last index).
_INT_MAX = (2**31 - 1, 2**63 - 1)


def _size(value: Any) -> Any:
    """A start or end: an int, or a size of a dynamic axis (a SymInt, clamped below over the profile's range)."""
    return value if isinstance(value, SymInt) else int(value)


def _tight(dim: int, start: int, end: int, step: int) -> tuple[int, int, int]:
    """ONNX's clamping of one axis's (start, end, step), then the canonical (tight) form described above."""
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
    else:
        start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    count = max(0, _ceil_div(end - start, step))
    if count == 0:
        return 0, 0, 1
    last = start + (count - 1) * step
    return start, last + (1 if step > 0 else -1), step


def slice_attrs(shape: Sequence[int], starts: Sequence[int], ends: Sequence[int], axes: Sequence[int] | None,
                steps: Sequence[int] | None) -> dict[str, Any]:
    """Canonical Slice attributes from ONNX's starts/ends/axes/steps (any version's form)."""
    rank = len(shape)
    n = len(starts)
    axes = tuple(range(n)) if axes is None else tuple(axes)
    steps = (1,) * n if steps is None else tuple(steps)
    if not len(ends) == len(axes) == len(steps) == n:
        raise OpError(f"starts, ends, axes and steps must have one value per sliced axis; got {n} starts, "
                      f"{len(ends)} ends, {len(axes)} axes and {len(steps)} steps")
    if n > rank:
        raise OpError(f"slices {n} axes, but the data has rank {rank}")
    if 0 in steps:
        raise OpError(f"steps {list(steps)} contain 0; a step must be a nonzero integer")
    out = [(0, d, 1) for d in shape]
    for axis, start, end, step in zip(axes_in_range(axes, rank, "axes"), starts, ends, steps):
        if step < 0 and end in _INT_MAX:
            raise OpError(f"axis {axis} is sliced backwards (step {step}) to end={end}. ONNX clamps that end to "
                          "the last index, which makes the slice empty, but onnxruntime reads it as 'to the "
                          "beginning'; to slice backwards to the beginning, use end=INT64_MIN (or -dim - 1)")
        out[axis] = _tight(shape[axis], _size(start), _size(end), int(step))
    return {"starts": tuple(s for s, _, _ in out), "ends": tuple(e for _, e, _ in out),
            "steps": tuple(k for _, _, k in out)}


class Slice(OpDef, layer.Slice):
    versions = (1, 10, 11, 13)
    checks_required = ("ends", "starts")  # convert asks for both at once

    def convert(self, node: Node) -> None:
        x = node.input(0)
        assert x is not None
        if node.version < 10:
            if node.num_inputs != 1:
                raise node.fail(f"Slice-{node.version} takes one input (starts/ends/axes are attributes); "
                                f"got {node.num_inputs}")
            if node.attr("starts") is ABSENT or node.attr("ends") is ABSENT:
                raise node.fail("the starts and ends attributes are required")
            axes_attr = node.attr("axes")
            attrs = slice_attrs(x.shape, ints(node.attr("starts")), ints(node.attr("ends")),
                                None if axes_attr is ABSENT else ints(axes_attr), None)
        else:
            if node.num_inputs < 3:
                raise node.fail(f"Slice-{node.version} needs the inputs data, starts and ends; got "
                                f"{node.num_inputs} input(s)")
            for i, what in ((3, "the axes"), (4, "the steps")):
                t = node.input(i)
                if t is not None and t.dtype not in ("int32", "int64"):
                    raise node.fail(f"input {i} ({what}) has dtype {t.dtype}; it must be int32 or int64")
            starts, ends = (symbolic.sizes(node.static(i, what))
                            for i, what in ((1, "the slice starts"), (2, "the slice ends")))
            axes = ints(node.static(3, "the sliced axes")) if node.input(3) is not None else None
            steps = ints(node.static(4, "the slice steps")) if node.input(4) is not None else None
            attrs = slice_attrs(x.shape, starts, ends, axes, steps)
        node.emit(attrs, inputs=[0])


class Split(OpDef, layer.Split):
    versions = (1, 2, 11, 13, 18)
    # Split 1's schema gives axis no default, though its documentation says 0, as every later version's does.
    attribute_overrides = {"axis": Attr("int", 0)}

    def convert(self, node: Node) -> None:
        x = node.input(0)
        assert x is not None
        axis = axis_in_range(int(node.attr("axis")), x.rank)
        sizes = self._sizes(node, x.shape[axis])
        if any(s < 0 for s in sizes) or sum(sizes) != x.shape[axis]:
            raise node.fail(f"split sizes {list(sizes)} must be non-negative and add up to the dimension "
                            f"{x.shape[axis]} of axis {axis} (input shape {list(x.shape)})")
        if len(sizes) != node.num_outputs:
            raise node.fail(f"split sizes {list(sizes)} make {len(sizes)} outputs, but the node lists "
                            f"{node.num_outputs}")
        used = [i + 1 for i in range(len(sizes)) if node.output_used(i)]
        node.emit({"axis": axis, "split": sizes}, inputs=[0], n_outputs=max(used, default=len(sizes)))

    def _sizes(self, node: Node, dim: int) -> tuple[int, ...]:
        n = node.num_outputs
        if node.input(1) is not None:
            if node.version in (2, 11):
                raise node.fail(f"Split-{node.version} takes one input (split is an attribute)")
            if node.has_attr("num_outputs"):
                raise node.fail("give either the split input or the num_outputs attribute, not both")
            return ints(node.static(1, "the split sizes"))
        if node.version < 13 and node.attr("split") is not ABSENT and len(node.attr("split")):
            return ints(node.attr("split"))
        if node.version >= 18:
            if not node.has_attr("num_outputs"):
                raise node.fail("Split-18 needs the split input or the num_outputs attribute; neither is given")
            count = int(node.attr("num_outputs"))
            if count != n or count < 1:
                raise node.fail(f"num_outputs={count}, but the node lists {n} outputs")
            chunk = _ceil_div(dim, count)
            if dim - chunk * (count - 1) < 0:
                raise node.fail(f"num_outputs={count} cannot split a dimension of {dim}: chunks of {chunk} "
                                "would leave a negative last chunk")
            return (chunk,) * (count - 1) + (dim - chunk * (count - 1),)
        if n < 1 or dim % n:
            raise node.fail(f"without split sizes, the dimension {dim} is split into {n} equal parts (one per "
                            "output), but it does not divide evenly; give the sizes")
        return (dim // n,) * n

"""PRelu: x where x >= 0, slope * x elsewhere.

From opset 7 the slope broadcasts to X one way (unidirectionally, numpy rules from the right), so the output
keeps X's shape. Before opset 7 a 1-D slope of C values meant one slope per *channel* (axis 1): Caffe2's PRelu.
The frontend upgrades models older than opset 7 with onnx.version_converter, which leaves such a slope as it is,
so a node of an opset-7 model (where upgraded models land) whose 1-D slope fits only axis 1 keeps its old
meaning: canonical attribute ``per_channel`` = 1. Where the slope would fit both axis 1 and the last axis (they
have the same size) the two meanings differ and the node is refused rather than guessed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reprobuild.core.dtypes import FLOATS
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType
from reprobuild.layers.families import float_compute_type


def _broadcasts_to(slope: tuple[int, ...], x: tuple[int, ...]) -> bool:
    return len(slope) <= len(x) and all(s in (1, d) for s, d in zip(reversed(slope), reversed(x)))


class PRelu(LayerDef):
    op = "PRelu"
    num_inputs = (2, 2)
    dtypes = (*FLOATS, "int32", "int64", "uint32", "uint64")
    same_type = (1,)

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        x, slope = inputs[0].shape, inputs[1].shape
        if attrs["per_channel"]:
            if len(x) < 2 or slope != (x[1],):
                raise OpError(f"per_channel=1 needs a slope of shape [C] = [{x[1] if len(x) > 1 else '?'}]; got "
                              f"{list(slope)} for input {list(x)}")
        elif not _broadcasts_to(slope, x):
            raise OpError(f"slope has shape {list(slope)}, which does not broadcast to the input's shape {list(x)} "
                          "(PRelu broadcasts the slope one way: the output keeps the input's shape)")
        return [TensorType(x, inputs[0].dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x, slope = inputs
        work = float_compute_type(xp, x)
        xw, sw = x.astype(work, copy=False), slope.astype(work, copy=False)
        if attrs["per_channel"]:
            sw = sw.reshape((-1,) + (1,) * (x.ndim - 2))
        return [xp.where(xw < 0, xw * sw, xw).astype(x.dtype, copy=False)]

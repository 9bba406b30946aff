"""Ops that make or relabel tensors without arithmetic: Identity, Dropout (inference), Constant,
ConstantOfShape, Shape, Size, Reshape, Flatten, Concat.

Shape and Size become constants when the network is parsed (every shape is fixed); Constant and ConstantOfShape
are constants from the start. Identity and Dropout are removed by the ``eliminate_identities`` pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from reprobuild.core.dtypes import ALL
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType
from reprobuild.layers.formulas import evaluate


class Identity(LayerDef):
    """A copy of the input: its formula (the operand itself) is the table's, as for the other step ops."""

    op = "Identity"
    version = 2  # 2: computes through the formula table (layers/formulas.py); the same bits
    dtypes = ALL

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        return [inputs[0]]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        return [evaluate(xp, "Identity", inputs[:1], attrs).copy()]


class Reshape(LayerDef):
    """Canonical attribute ``shape``: the target shape with 0 and -1 resolved."""

    op = "Reshape"
    version = 2
    num_inputs = (2, 2)
    dtypes = ALL

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        target = tuple(attrs["shape"])
        if int(np.prod(target, dtype=np.int64)) != inputs[0].size:
            raise OpError(f"cannot reshape {list(inputs[0].shape)} to {list(target)}")
        return [TensorType(target, inputs[0].dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        return [inputs[0].reshape(tuple(attrs["shape"])).copy()]


class Flatten(LayerDef):
    op = "Flatten"
    version = 2
    dtypes = ALL

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        x, axis = inputs[0].shape, int(attrs["axis"])
        shape = (int(np.prod(x[:axis], dtype=np.int64)), int(np.prod(x[axis:], dtype=np.int64)))
        return [TensorType(shape, inputs[0].dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        shape = self.infer(attrs, [TensorType(tuple(inputs[0].shape), str(inputs[0].dtype))])[0].shape
        return [inputs[0].reshape(shape).copy()]


class Concat(LayerDef):
    op = "Concat"
    version = 2
    num_inputs = (1, None)
    dtypes = ALL

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        axis, first = int(attrs["axis"]), inputs[0].shape
        if not 0 <= axis < len(first):  # canonical_attrs resolves a negative axis; the kernels rely on it
            raise OpError(f"axis {axis} is not an axis of the rank-{len(first)} inputs (0 to {len(first) - 1})")
        for i, t in enumerate(inputs):
            if t.dtype != inputs[0].dtype:
                raise OpError(f"input {i} has dtype {t.dtype} but input 0 has {inputs[0].dtype}")
            s = t.shape
            if len(s) != len(first) or any(a != b for d, (a, b) in enumerate(zip(s, first)) if d != axis):
                raise OpError(f"inputs {[list(x.shape) for x in inputs]} differ outside the concat axis {axis}")
        total = sum(t.shape[axis] for t in inputs)
        return [TensorType((*first[:axis], total, *first[axis + 1:]), inputs[0].dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        return [xp.concatenate(inputs, axis=int(attrs["axis"]))]


LAYERS = (Concat(), Flatten(), Identity(), Reshape())

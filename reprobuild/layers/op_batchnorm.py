"""BatchNormalization in inference mode: y = (x - mean) / sqrt(var + epsilon) * scale + bias, per channel.

Training mode (``training_mode=1``, or the running-statistics outputs) is refused: reprobuild builds inference
engines. The parameters may be constants or run-time inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reprobuild.core.dtypes import FLOATS
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType


class BatchNormalization(LayerDef):
    op = "BatchNormalization"
    version = 2
    num_inputs = (5, 5)
    num_outputs = (1, 5)
    dtypes = FLOATS

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        x = inputs[0].shape
        if len(x) < 2:
            raise OpError(f"needs an input of rank >= 2 (N, C, ...); got {list(x)}")
        for i, t in enumerate(inputs[1:], 1):
            if t.shape != (x[1],):
                raise OpError(f"input {i} has shape {list(t.shape)}; it should be [{x[1]}], one value per channel")
            if t.dtype not in FLOATS:
                raise OpError(f"input {i} has dtype {t.dtype}; a float type is needed")
        return [TensorType(x, inputs[0].dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x, scale, bias, mean, var = inputs
        shape = (1, -1) + (1,) * (x.ndim - 2)
        p = [v.astype(xp.float64).reshape(shape) for v in (scale, bias, mean, var)]
        s = p[0] / xp.sqrt(p[3] + attrs["epsilon"])
        t = p[1] - p[2] * s
        work = xp.float64 if x.dtype == xp.float64 else xp.float32
        y = x.astype(work, copy=False) * s.astype(work) + t.astype(work)
        return [y.astype(x.dtype, copy=False)]


LAYERS = (BatchNormalization(),)

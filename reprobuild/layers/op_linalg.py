"""Linear algebra: Det, the determinant of each square matrix in the last two dimensions (batched over the rest).

The determinant comes from an LU factorization with partial pivoting (``xp.linalg.det``: LAPACK getrf on the CPU,
cuSOLVER getrf on the GPU), computed in float64 whatever the input's float type and rounded once, so float32
results do not depend on which library factorized them beyond that rounding. A 0 x 0 matrix has determinant 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reprobuild.core.dtypes import FLOATS
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType


class Det(LayerDef):
    op = "Det"
    dtypes = FLOATS

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        x = inputs[0]
        if x.rank < 2 or x.shape[-1] != x.shape[-2]:
            raise OpError(f"needs square matrices in the last two dimensions ([*, M, M]); got {list(x.shape)}")
        return [TensorType(x.shape[:-2], x.dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x = inputs[0]
        batch, m = x.shape[:-2], x.shape[-1]
        if m == 0 or 0 in batch:
            return [xp.ones(batch, dtype=x.dtype)]
        flat = x.astype(xp.float64).reshape(-1, m, m)
        return [xp.linalg.det(flat).reshape(batch).astype(x.dtype)]


LAYERS = (Det(),)

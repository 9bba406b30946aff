"""Matrix products: Gemm (alpha * op(A) @ op(B) + beta * C) and MatMul (numpy matmul: any rank, batch
dimensions broadcast, 1-D operands promoted and the added dimension dropped again).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reprobuild.core.dtypes import FLOATS
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType, broadcast
from reprobuild.layers.families import float_compute_type

_NUMERIC_MATMUL = (*FLOATS, "int32", "int64", "uint32", "uint64")


class Gemm(LayerDef):
    op = "Gemm"
    version = 2
    num_inputs = (2, 3)
    dtypes = _NUMERIC_MATMUL
    same_type = (1, 2)

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        a, b = inputs[0].shape, inputs[1].shape
        if len(a) != 2 or len(b) != 2:
            raise OpError(f"Gemm needs rank-2 A and B; got {list(a)}, {list(b)}")
        m, k = (a[1], a[0]) if attrs["transA"] else a
        k2, n = (b[1], b[0]) if attrs["transB"] else b
        if k != k2:
            raise OpError(f"inner dimensions differ: A gives K={k}, B gives K={k2}")
        if len(inputs) > 2 and broadcast(inputs[2].shape, (m, n)) != (m, n):
            raise OpError(f"C of shape {list(inputs[2].shape)} does not broadcast to [{m}, {n}]")
        return [TensorType((m, n), inputs[0].dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        a, b = inputs[0], inputs[1]
        dtype, work = a.dtype, float_compute_type(xp, a)
        a = a.astype(work, copy=False).T if attrs["transA"] else a.astype(work, copy=False)
        b = b.astype(work, copy=False).T if attrs["transB"] else b.astype(work, copy=False)
        y = xp.matmul(a, b)
        alpha, beta = attrs["alpha"], attrs["beta"]
        if alpha != 1.0:
            y = y * xp.asarray(alpha, dtype=work)
        if len(inputs) > 2:
            c = inputs[2].astype(work, copy=False)
            y = y + (c if beta == 1.0 else xp.asarray(beta, dtype=work) * c)
        return [y.astype(dtype, copy=False)]


class MatMul(LayerDef):
    op = "MatMul"
    num_inputs = (2, 2)
    dtypes = _NUMERIC_MATMUL
    same_type = (1,)

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        a, b = inputs[0].shape, inputs[1].shape
        if not a or not b:
            raise OpError(f"MatMul operands must have rank >= 1; got {list(a)} and {list(b)}")
        a2 = (1, *a) if len(a) == 1 else a
        b2 = (*b, 1) if len(b) == 1 else b
        if a2[-1] != b2[-2]:
            raise OpError(f"inner dimensions differ: {list(a)} @ {list(b)}")
        shape = (*broadcast(a2[:-2], b2[:-2]), a2[-2], b2[-1])
        if len(a) == 1:
            shape = shape[:-2] + shape[-1:]
        if len(b) == 1:
            shape = shape[:-1]
        return [TensorType(shape, inputs[0].dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        a, b = inputs
        work = float_compute_type(xp, a)
        return [xp.matmul(a.astype(work, copy=False), b.astype(work, copy=False)).astype(a.dtype, copy=False)]


LAYERS = (Gemm(), MatMul())

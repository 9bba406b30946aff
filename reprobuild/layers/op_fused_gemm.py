"""FusedGemm: a matrix product with its epilogue, made by the ``fuse_gemm_epilogue`` pass, never by ONNX.

y = activation(MatMul(A, B) + bias + R): ``A`` is an activation of rank >= 2 (..., M, K), ``B`` a constant
(K, N) weight, ``bias`` a constant of shape (N,), the residual ``R`` (input 3) optional and of the output's shape,
and ``activation`` one of FusedConv's (``""``, ``Relu``, ``Clip``, ``Sigmoid``, ``SiLU``). A Linear layer as
PyTorch exports it (MatMul + Add, then Relu or a residual Add) becomes one layer, and a CUDA tactic one kernel.

The reference computes each step with the op definition of the layer it replaced (MatMul, Add, then FusedConv's
epilogue: Add, Relu, Clip, Sigmoid, Mul), so on the CPU the fused layer gives the bits of the unfused ones. A Gemm
the pass fuses (transA 0, alpha and beta 1, float32 or float64) computes ``A @ B + C`` in its own type and rounds
once, which is what MatMul then Add give in those types.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reprobuild.core.dtypes import FLOATS
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType
from reprobuild.layers.op_arith import Add
from reprobuild.layers.op_fused_conv import check_activation, epilogue
from reprobuild.layers.op_gemm import MatMul


class FusedGemm(LayerDef):
    op = "FusedGemm"
    # 2: the ops it builds on are imported, not looked up in the registry (same results)
    version = 3  # 3: the ops it builds on compute through the formula table (layers/formulas.py); the same bits
    num_inputs = (3, 4)
    dtypes = FLOATS
    same_type = (1, 2, 3)

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        check_activation(attrs)
        self.check_types(inputs)
        a, b, bias = inputs[0].shape, inputs[1].shape, inputs[2].shape
        if len(a) < 2 or len(b) != 2:
            raise OpError(f"FusedGemm needs A of rank >= 2 and a (K, N) B; got {list(a)} and {list(b)}")
        (out,) = MatMul().infer({}, inputs[:2])
        if bias != (b[1],):
            raise OpError(f"the bias has shape {list(bias)}; it must be [{b[1]}], one value per output column")
        if len(inputs) > 3 and inputs[3].shape != out.shape:
            raise OpError(f"the residual has shape {list(inputs[3].shape)}; the product's output is "
                          f"{list(out.shape)}")
        return [out]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        (y,) = MatMul().compute(xp, {}, inputs[0], inputs[1])
        (y,) = Add().compute(xp, {}, y, inputs[2])
        return [epilogue(xp, attrs, y, inputs[3] if len(inputs) > 3 else None)]


LAYERS = (FusedGemm(),)

"""Every op module, listed explicitly: the registry never depends on import order or on a directory listing.

Add a module here when you add an op family; its ``OPS`` tuple lists its definitions.
"""

from __future__ import annotations

from reprobuild.ops import (
    op_activation,
    op_arith,
    op_attention,
    op_batchnorm,
    op_cast,
    op_conv,
    op_convtranspose,
    op_cumulative,
    op_einsum,
    op_fused_conv,
    op_gemm,
    op_image,
    op_index,
    op_linalg,
    op_logic,
    op_math,
    op_norm,
    op_pool,
    op_quant,
    op_reduce,
    op_resize,
    op_rnn,
    op_signal,
    op_softmax,
    op_tensor,
    op_transform,
)

OP_MODULES = (
    op_activation,
    op_arith,
    op_attention,
    op_batchnorm,
    op_cast,
    op_conv,
    op_convtranspose,
    op_cumulative,
    op_einsum,
    op_fused_conv,
    op_gemm,
    op_image,
    op_index,
    op_linalg,
    op_logic,
    op_math,
    op_norm,
    op_pool,
    op_quant,
    op_reduce,
    op_resize,
    op_rnn,
    op_signal,
    op_softmax,
    op_tensor,
    op_transform,
)

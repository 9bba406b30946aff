"""Every op module, listed explicitly: the registry never depends on import order or on a directory listing.

Add a module here when you add an op family; its ``OPS`` tuple lists its definitions.
"""

from __future__ import annotations

from reprobuild.ops import (
    op_activation,
    op_arith,
    op_batchnorm,
    op_conv,
    op_gemm,
    op_pool,
    op_softmax,
    op_tensor,
)

OP_MODULES = (
    op_activation,
    op_arith,
    op_batchnorm,
    op_conv,
    op_gemm,
    op_pool,
    op_softmax,
    op_tensor,
)

"""Every op module, listed once and explicitly: the registry never depends on import order or on a directory listing.

Add a module's name here when you add an op family; its ``OPS`` tuple lists its definitions. The op registry
imports them all only when asked for every op (``all_ops``); a lookup of one op imports only the module that
defines it (``_op_index.py``, generated from this list by ``python -m reprobuild.registry.index``).
"""

from __future__ import annotations

import importlib
from types import ModuleType

OP_MODULES: tuple[str, ...] = (
    "op_activation",
    "op_arith",
    "op_attention",
    "op_batchnorm",
    "op_cast",
    "op_conv",
    "op_convtranspose",
    "op_cumulative",
    "op_einsum",
    "op_fused_conv",
    "op_fused_elementwise",
    "op_fused_gemm",
    "op_gemm",
    "op_image",
    "op_index",
    "op_linalg",
    "op_logic",
    "op_math",
    "op_norm",
    "op_pool",
    "op_quant",
    "op_reduce",
    "op_resize",
    "op_rnn",
    "op_signal",
    "op_softmax",
    "op_tensor",
    "op_transform",
)


def op_module(name: str) -> ModuleType:
    """The op module ``name`` (one of ``OP_MODULES``: never a name read from a file)."""
    if name not in OP_MODULES:
        raise KeyError(f"{name!r} is not an op module of reprobuild.ops._op_list")
    return importlib.import_module(f"reprobuild.ops.{name}")


def op_modules() -> list[ModuleType]:
    """Every op module, in the list's order."""
    return [op_module(name) for name in OP_MODULES]

"""Every op family module, listed once and explicitly: the registries never depend on import order or on a directory
listing.

Each name is a module of both halves: ``reprobuild.layers.<name>`` (what its layers are; its ``LAYERS`` tuple) and
``reprobuild.ops.<name>`` (how ONNX nodes become them; its ``OPS`` tuple). Add a name here when you add an op
family. The registries import them all only when asked for every definition; a lookup of one op imports only the
module that defines it (``_family_index.py``, one table for both halves, generated from this list by
``python -m reprobuild.registry.index``).
"""

from __future__ import annotations

import importlib
from types import ModuleType

FAMILY_MODULES: tuple[str, ...] = (
    "op_activation",
    "op_arith",
    "op_attention",
    "op_batchnorm",
    "op_cast",
    "op_conv",
    "op_convtranspose",
    "op_cumulative",
    "op_einsum",
    "op_fused_attention",
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


def family_module(package: str, name: str) -> ModuleType:
    """The module ``name`` (one of ``FAMILY_MODULES``: never a name read from a file) of ``package``
    (``reprobuild.layers`` or ``reprobuild.ops``)."""
    if name not in FAMILY_MODULES:
        raise KeyError(f"{name!r} is not an op family module of reprobuild.layers._layer_list")
    return importlib.import_module(f"{package}.{name}")


def layer_module(name: str) -> ModuleType:
    """The layer module ``name``."""
    return family_module("reprobuild.layers", name)


def layer_modules() -> list[ModuleType]:
    """Every layer module, in the list's order."""
    return [layer_module(name) for name in FAMILY_MODULES]

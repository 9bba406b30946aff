"""The tactic families, listed once, by module name, in sorted order: the registry never depends on import order.

Add a family module's name here when you add a family; its ``TACTICS`` tuple lists its tactics. Only the built-in
registry imports them all (``family_modules``); a Runtime imports the families its engine uses
(``reprobuild.registry.index``).
"""

from __future__ import annotations

import importlib
from types import ModuleType

FAMILIES: tuple[str, ...] = (
    "attention", "batchnorm", "conv", "elementwise", "fused_elementwise", "gemm", "index", "logic", "norm", "pool",
    "reduction", "shape", "softmax",
)


def family_modules() -> list[ModuleType]:
    """Every family module, in the list's order."""
    return [importlib.import_module(f"reprobuild.kernels.{name}") for name in FAMILIES]

"""The built-in tactic registry: every family of ``kernels/_op_list.py`` and the reference tactic of every op
definition (the plugins' tactics come on top of it, in ``plugins``)."""

from __future__ import annotations

from reprobuild.kernels.reference import reference_tactics
from reprobuild.kernels.tactic import TacticRegistry

_BUILTIN: TacticRegistry | None = None


def builtin_registry() -> TacticRegistry:
    """The registry of every tactic family listed in ``kernels/_op_list.py``, and the reference tactics of every
    op definition (made once per process)."""
    global _BUILTIN
    if _BUILTIN is None:
        # Imported here on purpose: importing a family module is the cost a Runtime avoids by resolving only the
        # families its engine uses (``reprobuild.registry.lazy``); only a build or the lock needs all of them.
        from reprobuild.kernels._op_list import FAMILIES

        _BUILTIN = TacticRegistry([*(t for family in FAMILIES for t in family.TACTICS), *reference_tactics()])
    return _BUILTIN

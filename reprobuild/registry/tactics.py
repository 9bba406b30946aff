"""The built-in tactic registry: every family of ``kernels/_op_list.py`` and the reference tactic of every op
definition (the plugins' tactics come on top of it, in ``plugins``)."""

from __future__ import annotations

from reprobuild.kernels._op_list import family_modules
from reprobuild.kernels.reference import reference_tactics
from reprobuild.kernels.tactic import TacticRegistry

_BUILTIN: TacticRegistry | None = None


def builtin_registry() -> TacticRegistry:
    """The registry of every tactic family listed in ``kernels/_op_list.py``, and the reference tactics of every
    op definition (made once per process)."""
    global _BUILTIN
    if _BUILTIN is None:
        # Every family module is imported only here (a build or the lock needs all of them); a Runtime resolves
        # only the families its engine uses (``reprobuild.registry.lazy``).
        families = family_modules()
        _BUILTIN = TacticRegistry([*(t for family in families for t in family.TACTICS), *reference_tactics()])
    return _BUILTIN

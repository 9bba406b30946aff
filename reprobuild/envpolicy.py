"""Comparing a recorded environment fingerprint with this machine's, under a policy.

``strict`` refuses any difference. ``compatible`` allows the differences that cannot change results and says
which it allowed. ``ignore`` allows everything and warns. Every difference is reported field by field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from reprobuild.textformat import table

POLICIES = ("strict", "compatible", "ignore")
MISSING = "<absent>"


@dataclass(frozen=True)
class EnvDifference:
    field: str
    recorded: str
    current: str
    harmless: str | None  # why this difference cannot change results, or None when it can

    def allowed(self, policy: str) -> bool:
        return policy == "ignore" or (policy == "compatible" and self.harmless is not None)


def _patch_only(a: str, b: str) -> bool:
    return a.split(".")[:2] == b.split(".")[:2]


def harmless_reason(field: str, recorded: str, current: str) -> str | None:
    """Why a difference in ``field`` cannot change an engine's numbers, or None if it can (or might)."""
    if field == "python" and _patch_only(recorded, current):
        return "a Python patch release changes no NumPy or CuPy arithmetic"
    return None


def compare_environments(recorded: Mapping[str, str], current: Mapping[str, str]) -> list[EnvDifference]:
    fields = sorted(set(recorded) | set(current))
    diffs = []
    for field in fields:
        a, b = recorded.get(field, MISSING), current.get(field, MISSING)
        if a != b:
            diffs.append(EnvDifference(field, a, b, harmless_reason(field, a, b)))
    return diffs


def difference_table(diffs: list[EnvDifference], policy: str) -> str:
    rows = []
    for d in diffs:
        if d.allowed(policy):
            verdict = f"allowed: {d.harmless}" if d.harmless and policy == "compatible" else "ignored"
        else:
            verdict = "refused" + ("" if d.harmless is None else " (harmless under --env-policy compatible)")
        rows.append((d.field, d.recorded, d.current, verdict))
    return table(rows, ("field", "manifest", "this machine", "verdict"), indent="    ")

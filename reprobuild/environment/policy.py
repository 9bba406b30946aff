"""Comparing a recorded environment fingerprint with this machine's, under a policy.

``strict`` refuses any difference. ``compatible`` allows the differences that cannot change results and says
which it allowed. ``ignore`` allows everything and warns. Every difference is reported field by field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from reprobuild.core.textformat import table

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


#: Fields that name the code that computes (the BLAS and its kernel, the CPU or GPU it was chosen for, the
#: variables that steer them): a difference there is never harmless, whatever else a policy allows.
DECIDES_CODE = ("backend", "blas", "cpu.", "env.", "gpu.", "cuda.", "cublas", "nvrtc", "cupy", "numpy",
                "platform.")


def decides_code(field: str) -> bool:
    return field.startswith(DECIDES_CODE)


def harmless_reason(field: str, recorded: str, current: str) -> str | None:
    """Why a difference in ``field`` cannot change an engine's numbers, or None if it can (or might)."""
    if decides_code(field):
        return None
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


#: Differences named in a one-line summary; the table lists them all.
SUMMARY_FIELDS = 4


def difference_summary(diffs: list[EnvDifference]) -> str:
    """``blas.core SkylakeX -> Haswell, env.OPENBLAS_CORETYPE <unset> -> Haswell``: the differing fields, in one
    line (the first few, then a count)."""
    shown = [f"{d.field} {d.recorded} -> {d.current}" for d in diffs[:SUMMARY_FIELDS]]
    if len(diffs) > SUMMARY_FIELDS:
        shown.append(f"and {len(diffs) - SUMMARY_FIELDS} more")
    return ", ".join(shown)


def remedies(diffs: list[EnvDifference], current: Mapping[str, str]) -> list[str]:
    """What would make this machine compute as the recorded one, where that is a setting: the OpenBLAS kernel to
    force, a numerics variable to set or unset. Hardware and installed versions have no such remedy."""
    lines = []
    coretype_differs = any(d.field == "env.OPENBLAS_CORETYPE" for d in diffs)  # then setting it is the remedy
    for d in diffs:
        if (d.field == "blas.core" and current.get("blas.api") == "openblas" and not coretype_differs
                and d.recorded not in (MISSING, "unknown")):
            lines.append(f"OpenBLAS picked its {d.current} kernels here, the recorded build ran {d.recorded}: "
                         f"OPENBLAS_CORETYPE={d.recorded} forces those (where this CPU supports them)")
        elif d.field.startswith("env.") and d.recorded != MISSING:
            name = d.field.removeprefix("env.")
            lines.append(f"unset {name}" if d.recorded == "<unset>" else f"set {name}={d.recorded}")
    return lines

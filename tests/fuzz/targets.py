"""Every fuzz target, in campaign order, and how a campaign's cases are split among them."""

from __future__ import annotations

from collections.abc import Sequence

from tests.fuzz import target_amplify, target_engines, target_inputs, target_manifests, target_onnx
from tests.fuzz.case import Target

TARGETS: tuple[Target, ...] = (*target_engines.TARGETS, *target_manifests.TARGETS, *target_onnx.TARGETS,
                               *target_inputs.TARGETS, *target_amplify.TARGETS)
BY_NAME = {t.name: t for t in TARGETS}


def plan_cases(cases: int, names: Sequence[str]) -> dict[str, int]:
    """``cases`` split among the named targets by their shares (largest remainders get the rest)."""
    shares = {n: BY_NAME[n].share for n in names}
    total = sum(shares.values())
    exact = {n: cases * s / total for n, s in shares.items()}
    plan = {n: int(v) for n, v in exact.items()}
    for n in sorted(exact, key=lambda n: (plan[n] - exact[n], n))[:cases - sum(plan.values())]:
        plan[n] += 1
    return plan


def ci_plan(scale: float = 1.0, names: Sequence[str] | None = None) -> dict[str, int]:
    return {t.name: max(1, int(t.ci * scale)) for t in TARGETS if names is None or t.name in names}

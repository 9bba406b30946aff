"""Every tactic still computes what its pins (``tactic_pins.json``) record for its name and version.

In the environment the pins were recorded in (on the CPU, the backend's whole fingerprint: the CPU, NumPy's SIMD
targets, the BLAS and the kernel it picked, ``blas.core``, and the variables that steer them), outputs must be
bit-identical. Elsewhere (another CPU's vectorized exp, another BLAS kernel) the test warns, naming the fields that
differ, and their float64 sums must agree to 1e-4 of the sum of magnitudes (a signed sum cancels, so its own
magnitude is no scale: a float16 result one rounding apart on another CPU moves it by far more than 1e-5 of
itself). A tactic whose outputs change without a version bump fails here; a new tactic (or a new version) without
pins fails too, until ``python -m tests.kernels.pin_tactics`` records them. See ``pin_tactics.py``.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from reprobuild.environment.policy import compare_environments, difference_summary
from reprobuild.kernels.backend import get_backend
from reprobuild.registry import default_registry
from tests.helpers import BACKENDS
from tests.kernels.pin_tactics import compute_pins, environment, load, section


def _close(a: list[float], b: list[float], scale: list[float]) -> bool:
    """Each float64 sum within 1e-4 of its output's sum of magnitudes (``scale``) of the pinned one."""
    return all(abs(x - y) <= 1e-4 * max(1.0, abs(s)) for x, y, s in zip(a, b, scale))


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_every_tactic_matches_its_pins(backend_name: str) -> None:
    backend = get_backend(backend_name)
    recorded = load().get(section(backend))
    if recorded is None:
        pytest.skip(f"no pins recorded for {section(backend)}; record them with python -m tests.kernels.pin_tactics "
                    f"--backend {backend_name} on such a machine")
    diffs = compare_environments(recorded["environment"], environment(backend))
    same_environment = not diffs
    if diffs:
        warnings.warn(f"{section(backend)} pins: this machine's environment differs from the pins' in "
                      f"{len(diffs)} field(s) ({difference_summary(diffs)}), so outputs are compared within the "
                      "cross-machine tolerance, not bit for bit (re-pin with python -m tests.kernels.pin_tactics "
                      "in a matching environment to compare exactly)", stacklevel=1)
    # (and the variants of a tactic that chooses its parameters per layer: some of them, such as split-K ones, may
    # not be run-to-run deterministic while the tactic's own declaration is)
    nondeterministic = {t.label for t in default_registry().all()
                        if t.determinism.value != "run_to_run" or t.per_layer_parameters}
    current = compute_pins(backend)
    problems = []
    for key, cases in current.items():
        # a tactic that is not run-to-run deterministic (the split-K atomic GEMM) can only match approximately
        exact = same_environment and key.split(" [")[0] not in nondeterministic
        pinned: dict[str, Any] = recorded["pins"].get(key, {})
        if not pinned:
            problems.append(f"{key}: no pins (a new tactic or version: run python -m tests.kernels.pin_tactics)")
            continue
        for case, now in cases.items():
            then = pinned.get(case)
            if then is None:
                continue  # a case this tactic could not run when the pins were made
            same = now["sha256"] == then["sha256"] if exact else (
                now["shapes"] == then["shapes"] and now["nonfinite"] == then["nonfinite"]
                and _close(now["sum"], then["sum"], then["abs_sum"])
                    and _close(now["abs_sum"], then["abs_sum"], then["abs_sum"]))
            if not same:
                how = "bit for bit" if exact else "beyond the cross-machine tolerance"
                problems.append(f"{key} on {case}: the outputs differ from the pinned ones {how}; a tactic's "
                                "behaviour must not change under the same version: bump its version (or the op "
                                "definition's version) and re-pin")
    where = ("in the pins' environment" if same_environment
             else f"in another environment ({difference_summary(diffs)})")
    assert not problems, f"compared {where}:\n" + "\n".join(problems)


def test_pins_cover_every_cpu_tactic_that_has_a_case() -> None:
    """Every cpu tactic in the registry has pins (a tactic without a case would go unpinned)."""
    pins = load().get("cpu", {}).get("pins", {})
    if not pins:
        pytest.skip("no cpu pins recorded yet")
    labels = {key.split(" [")[0] for key in pins}
    missing = [t.label for t in default_registry().all() if t.backend == "cpu" and t.label not in labels]
    assert not missing, f"tactics without pins: {missing}; run python -m tests.kernels.pin_tactics"

"""Every CUDA tactic agrees with the op's NumPy reference, on every op's single-node cases of ONNX's node suite
and on the hand-written tactics' cases (GPU host only)."""

from __future__ import annotations

import numpy as np
import pytest

from reprobuild.kernels.backend import get_backend
from reprobuild.kernels.identity import shown_label
from reprobuild.registry import default_registry
from tests.helpers import CUDA_SKIP
from tests.kernels.pin_tactics import hand_written_cases, op_cases, run_tactic, tactic_variants

#: (rtol, atol) by dtype: the GPU's libm and summation trees differ from NumPy's in the last bits.
TOLERANCE = {"float16": (1e-2, 1e-3), "bfloat16": (2e-2, 1e-2), "float32": (1e-4, 1e-5), "float64": (1e-10, 1e-12)}


def _agree(got: np.ndarray, want: np.ndarray, math: str | None = None) -> str | None:
    if got.shape != want.shape or got.dtype != want.dtype:
        return f"{got.shape} {got.dtype} vs {want.shape} {want.dtype}"
    if got.dtype.kind in "biu":
        bad = int(np.count_nonzero(got != want))
        return f"{bad} of {got.size} elements differ" if bad else None
    rtol, atol = TOLERANCE.get(str(got.dtype), (1e-3, 1e-3))
    g, w = got.astype(np.float64), want.astype(np.float64)
    if math == "tf32":  # inputs rounded to a 10-bit mantissa: errors scale with the output's magnitude
        rtol, atol = 1e-2, 5e-3 * max(1.0, float(np.nanmax(np.abs(w), initial=0.0)))
    ok = np.isclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
    if not ok.all():
        return f"{int((~ok).sum())} of {got.size} elements outside rtol {rtol} / atol {atol}, max abs " \
               f"{float(np.nanmax(np.abs(g - w))):.3g}"
    return None


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(CUDA_SKIP is not None, reason=f"no CUDA: {CUDA_SKIP}")
def test_every_cuda_tactic_agrees_with_the_numpy_reference() -> None:
    cpu, cuda = get_backend("cpu"), get_backend("cuda")
    registry = default_registry()
    problems, checked, ops = [], 0, set()
    for source in (hand_written_cases(), op_cases()):
        for case_id, spec, activations in source:
            reference = next((t for t in registry.candidates(spec.op, "cpu") if t.family == "reference"), None)
            if reference is None or reference.ineligibility(spec) is not None:
                continue
            want = run_tactic(reference, spec, activations, cpu)
            for tactic in registry.candidates(spec.op, "cuda"):
                if tactic.ineligibility(spec) is not None:
                    continue
                try:  # every variant of a tactic that chooses its parameters per layer
                    variants = tactic_variants(tactic, spec, cuda)
                except Exception as exc:
                    problems.append(f"{tactic.label} on {case_id}: variants: {type(exc).__name__}: {exc}")
                    continue
                for variant in variants:
                    if variant.determinism.value != "run_to_run":
                        continue
                    try:
                        got = run_tactic(variant, spec, activations, cuda)
                    except Exception as exc:  # collect every failure, then report them all
                        problems.append(f"{shown_label(variant)} on {case_id}: {type(exc).__name__}: {exc}")
                        continue
                    for i, (g, w) in enumerate(zip(got, want)):
                        problem = _agree(g, w, variant.math)
                        if problem:
                            problems.append(f"{shown_label(variant)} on {case_id}, output {i}: {problem}")
                    checked += 1
                    ops.add(spec.op)
    print(f"checked {checked} (tactic, case) pairs over {len(ops)} ops")
    assert not problems, "\n".join(problems)

"""Every tactic of every op, on each backend, against onnxruntime on fresh random inputs.

Outputs are poisoned with NaN and workspaces with 0xFF bytes before each run, so an element a kernel forgets to
write, or a workspace byte it reads before writing, fails the comparison.
"""

from __future__ import annotations

import numpy as np
import pytest

from reprobuild.builder.selection import layer_spec
from reprobuild.core.dtypes import np_dtype
from reprobuild.kernels.backend import get_backend
from reprobuild.kernels.identity import shown_label
from reprobuild.kernels.tactic import LayerSpec
from reprobuild.registry import default_registry
from tests.helpers import BACKENDS, assert_close, ort_run, tactic_tolerance, with_float_dtype
from tests.kernels.cases import CASES, Case
from tests.kernels.pin_tactics import run_tactic, tactic_variants


def case_spec(case: Case, rng: np.random.Generator) -> tuple[LayerSpec, list[np.ndarray], list[np.ndarray]]:
    model, feeds = case.make(rng)
    network = case.network(model)
    assert len(network.layers) == 1, f"{case.id} should be a single layer, got {network.summary()}"
    spec = layer_spec(network, 0)
    activations = [feeds[t] for t in network.layers[0].inputs if t not in network.constants]
    if spec.op == "Cast" and spec.outputs[0].dtype == "bfloat16":  # onnxruntime returns no bfloat16 arrays
        return spec, activations, [activations[0].astype(np_dtype("bfloat16"))]  # ml_dtypes' rounding
    if any(v.dtype.name in ("float16", "bfloat16") for v in feeds.values()):  # onnxruntime in float32 on the values
        wide = ort_run(*with_float_dtype(model, feeds, "float32"))
        return spec, activations, [r.astype(out.dtype) for r, out in zip(wide, spec.outputs)]
    return spec, activations, ort_run(model, feeds)


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_tactic_matches_onnxruntime(case: Case, backend_name: str, rng: np.random.Generator) -> None:
    backend = get_backend(backend_name)
    spec, activations, reference = case_spec(case, rng)
    ran = []
    for tactic in default_registry().candidates(spec.op, backend.name):
        if tactic.ineligibility(spec) is not None:
            continue
        for variant in tactic_variants(tactic, spec, backend):
            outputs = run_tactic(variant, spec, activations, backend)
            for out, ref in zip(outputs, reference):
                assert_close(out, ref, what=f"{case.id} with {shown_label(variant)} on {backend.name}",
                             **tactic_tolerance(tactic.math, str(out.dtype)))
        ran.append(tactic.name)
    assert ran, f"no {backend.name} tactic could run {case.id}"


@pytest.mark.parametrize("backend_name", ["cpu", "cuda"])
def test_every_tactic_is_exercised_by_some_case(backend_name: str) -> None:
    """A hand-written tactic no case can run would go untested; the cases must cover them all. (The reference
    tactics are checked op by op in tests/ops.)"""
    rng = np.random.default_rng(0)
    specs = [case_spec(case, rng)[0] for case in CASES]
    from reprobuild.kernels import cublaslt, cudnn_sdpa

    missing = {"cublaslt": cublaslt.unavailable_reason(), "cudnn": cudnn_sdpa.unavailable_reason()}
    for tactic in default_registry().all():
        if tactic.backend != backend_name or tactic.family == "reference" or missing.get(tactic.source):
            continue  # (a vendor source whose bindings are not installed here: the GPU host's run covers it)
        covered = [s.name for s in specs if s.op in tactic.ops and tactic.ineligibility(s) is None]
        assert covered, f"{tactic.label} is eligible for none of the test cases; add a case for it"


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_deterministic_tactics_repeat_bitwise_and_the_atomic_one_does_not(backend_name: str,
                                                                          rng: np.random.Generator) -> None:
    """Every tactic that declares run_to_run gives identical bits when run again; the split-K atomic GEMM, which
    declares none, really does vary (so exclusion, verify and the locator are exercised for real)."""
    from reprobuild.kernels.tactic import Determinism

    backend = get_backend(backend_name)
    for case in CASES:
        spec, activations, _ = case_spec(case, rng)
        for tactic in default_registry().candidates(spec.op, backend.name):
            if tactic.ineligibility(spec) is not None:
                continue
            for variant in tactic_variants(tactic, spec, backend):  # (each variant declares its own)
                if variant.determinism is Determinism.RUN_TO_RUN:
                    first = run_tactic(variant, spec, activations, backend)
                    again = run_tactic(variant, spec, activations, backend)
                    assert all(a.tobytes() == b.tobytes() for a, b in zip(first, again)), \
                        f"{shown_label(variant)} on {case.id}"
    if backend.name == "cuda":
        from tests.kernels.cases import gemm

        spec, activations, _ = case_spec(Case("big_k", gemm((64, 8192), (8192, 64), None)), rng)
        atomic = next(t for t in default_registry().candidates("Gemm", "cuda") if t.name == "cuda_splitk_atomic")
        assert atomic.determinism is Determinism.NONE
        results = {run_tactic(atomic, spec, activations, backend)[0].tobytes() for _ in range(20)}
        assert len(results) > 1, "20 runs of the atomic split-K GEMM gave one result; it should vary"

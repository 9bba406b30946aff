"""The builder: the manifest's records, deterministic bytes, exclusions, limits and progress."""

from __future__ import annotations

import pytest

from reprobuild.builder import Builder, BuilderConfig, ProgressMonitor
from reprobuild.core.errors import BuildError, UsageError
from reprobuild.core.logger import RecordingLogger, Severity
from reprobuild.frontend import network_from_onnx_path
from reprobuild.kernels.tactic import TacticRegistry
from reprobuild.registry import default_registry
from tests.helpers import EXAMPLES


def _network(name: str = "small_cnn.onnx"):  # type: ignore[no-untyped-def]
    return network_from_onnx_path(f"{EXAMPLES}/{name}")[0]


def _single_tactic_registry() -> TacticRegistry:
    """One tactic per op: the choices cannot depend on timing noise."""
    registry = default_registry()
    keep = {}
    for op in registry.ops():
        candidates = registry.candidates(op, "cpu")
        if candidates:
            keep[(candidates[0].family, candidates[0].name)] = candidates[0]
    return TacticRegistry(keep.values())


def test_same_network_config_and_choices_give_identical_engine_bytes() -> None:
    registry = _single_tactic_registry()
    config = BuilderConfig(backend="cpu", iterations=2)
    first = Builder(registry=registry).build(_network(), config)
    second = Builder(registry=registry).build(_network(), config)
    assert first.engine == second.engine
    assert first.manifest.pinned == second.manifest.pinned


def test_manifest_records_every_candidate_and_the_kernel_sources() -> None:
    manifest = Builder().build(_network(), BuilderConfig(backend="cpu", iterations=3)).manifest
    assert manifest.evidence is not None
    conv = next(e for e in manifest.evidence.layers if e.name == "stem")
    assert {c.tactic.name for c in conv.candidates} == {"cpu_im2col_gemm", "cpu_tap_accumulate", "cpu_FusedConv"}
    assert all(len(c.samples_ns) == 3 and c.reason for c in conv.candidates)
    registry = default_registry()
    for layer in manifest.pinned.layers:  # every tactic by value: its digest is this installation's
        assert registry.resolve(layer.op, layer.tactic.model_dump()).code_sha256 == layer.tactic.code_sha256
    assert manifest.pinned.kernel_sources == []  # CUDA sources only; a CPU build compiles none
    assert manifest.pinned.config.timing.iterations == 3
    assert manifest.evidence.tactics_timed >= len(manifest.pinned.layers)
    assert manifest.engine is not None and len(manifest.engine.sha256) == 64


def test_workspace_limit_excludes_tactics_and_says_why() -> None:
    result = Builder().build(_network(), BuilderConfig(backend="cpu", max_workspace_bytes=100_000, iterations=1))
    assert result.manifest.evidence is not None
    stem = {c.tactic.name: c for c in next(e for e in result.manifest.evidence.layers if e.name == "stem").candidates}
    assert stem["cpu_im2col_gemm"].status == "excluded"
    assert "needs 249088 workspace bytes, over the limit of 100000" in stem["cpu_im2col_gemm"].reason
    assert {stem["cpu_tap_accumulate"].status, stem["cpu_FusedConv"].status} == {"chosen", "lost"}
    assert result.manifest.pinned.memory.workspace_bytes <= 100_000 + 255
    hand_written = TacticRegistry(t for t in default_registry().all() if t.family != "reference")
    with pytest.raises(BuildError, match="over the limit of 0"):
        Builder(registry=hand_written).build(_network(), BuilderConfig(backend="cpu", max_workspace_bytes=0))


def test_no_eligible_tactic_is_a_build_error_listing_every_reason() -> None:
    with pytest.raises(BuildError, match=r"'stem' \(FusedConv\).*cpu_im2col_gemm: .*cpu_tap_accumulate: "):
        Builder().build(_network(), BuilderConfig(backend="cpu", tactic_sources=("builtin",)))


def test_invalid_config_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="iterations"):
        Builder().build(_network(), BuilderConfig(backend="cpu", iterations=0))
    with pytest.raises(UsageError, match="tactic source"):
        Builder().build(_network(), BuilderConfig(backend="cpu", tactic_sources=("magic",)))


def test_progress_is_reported_per_layer_and_can_cancel() -> None:
    class Counting(ProgressMonitor):
        def __init__(self) -> None:
            self.steps: list[str] = []

        def step_complete(self, phase: str, step: int, message: str) -> bool:
            self.steps.append(message)
            return len(self.steps) < 3

    monitor = Counting()
    with pytest.raises(BuildError, match="cancelled"):
        Builder().build(_network(), BuilderConfig(backend="cpu", progress_monitor=monitor))
    assert len(monitor.steps) == 3 and monitor.steps[0].startswith("[1/")
    logger = RecordingLogger()
    result = Builder(logger).build(_network("mlp.onnx"), BuilderConfig(backend="cpu", iterations=1))
    n = len(result.manifest.pinned.layers)
    assert any(m.startswith(f"[{n}/{n}] softmax") for m in logger.messages(Severity.INFO))

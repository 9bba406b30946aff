"""Noise-robust choice (tie band + preference order), the AlgorithmSelector hook, and the timing cache."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from reprobuild.builder import (
    AlgorithmCandidate,
    AlgorithmContext,
    AlgorithmSelector,
    Builder,
    BuilderConfig,
    TimingCache,
)
from reprobuild.builder.selection import Candidate, choose
from reprobuild.core.errors import BuildError, FormatError, UsageError
from reprobuild.frontend import network_from_onnx_path
from reprobuild.kernels.backend import CpuBackend
from reprobuild.registry import default_registry
from tests.helpers import EXAMPLES


def _network(name: str = "small_cnn.onnx"):  # type: ignore[no-untyped-def]
    return network_from_onnx_path(f"{EXAMPLES}/{name}")[0]


def _candidates(*medians: int) -> list[Candidate]:
    tactics = default_registry().candidates("Conv", "cpu")  # priority order: cpu_im2col_gemm, cpu_tap_accumulate
    return [Candidate(t, samples_ns=[m], median_ns=m) for t, m in zip(tactics, medians)]


def test_near_tie_goes_to_the_preferred_tactic() -> None:
    preferred, faster = _candidates(1020, 1000)
    assert choose([preferred, faster], True, 0.03, "") is preferred
    assert "within the 3.0% tie band of the fastest (cpu_tap_accumulate" in preferred.reason
    assert faster.status == "lost" and "within the 3.0% tie band but after cpu_im2col_gemm" in faster.reason


def test_outside_the_band_the_fastest_wins() -> None:
    preferred, faster = _candidates(1040, 1000)
    assert choose([preferred, faster], True, 0.03, "") is faster
    assert faster.reason == "fastest median 0.0010 ms"
    assert preferred.status == "lost" and "1.04x the fastest" in preferred.reason


def test_zero_band_is_strictly_fastest_and_ties_go_to_preference() -> None:
    a, b = _candidates(1000, 1000)
    assert choose([a, b], True, 0.0, "") is a
    a, b = _candidates(1001, 1000)
    assert choose([a, b], True, 0.0, "") is b


def test_a_full_band_makes_timed_builds_choose_identically(monkeypatch: pytest.MonkeyPatch) -> None:
    """With every candidate a near-tie, choices depend on priority alone: two timed builds give the same bytes.
    The timings are noise within a factor of 1.9 (a real machine's can be wider), different in each build."""
    noise = np.random.default_rng()

    def noisy_timer(self, kernel, inputs, outputs, workspace, warmup, runs_per_sample):  # type: ignore[no-untyped-def]
        kernel(inputs, outputs, workspace)  # the tactic still runs
        return lambda n: [int(x) for x in noise.uniform(100_000, 190_000, n)]

    monkeypatch.setattr(CpuBackend, "timer", noisy_timer)
    config = BuilderConfig(backend="cpu", tie_band=1.0, iterations=3)
    first, second = Builder().build(_network(), config), Builder().build(_network(), config)
    assert first.engine == second.engine
    assert first.manifest.pinned.config.tie_band == 1.0
    medians = [c.median_ns for e in first.manifest.evidence.layers for c in e.candidates if c.median_ns]
    assert len(set(medians)) > 1  # the timings did differ


def test_tie_band_must_be_a_fraction() -> None:
    with pytest.raises(UsageError, match="fraction"):
        Builder().build(_network(), BuilderConfig(backend="cpu", tie_band=3.0))


class ForbidIm2col(AlgorithmSelector):
    """Forbid one tactic everywhere and remember what it was asked and told."""

    def __init__(self) -> None:
        self.contexts: list[AlgorithmContext] = []
        self.reported: list[str] = []

    def select(self, context: AlgorithmContext,
               candidates: Sequence[AlgorithmCandidate]) -> Sequence[AlgorithmCandidate]:
        self.contexts.append(context)
        return [c for c in candidates if c.name not in ("cpu_im2col_gemm", "cpu_Conv")]

    def report(self, context: AlgorithmContext, chosen: AlgorithmCandidate) -> None:
        self.reported.append(f"{context.name}:{chosen.name}")


def test_a_selector_can_forbid_a_tactic_and_is_told_every_decision() -> None:
    selector = ForbidIm2col()
    result = Builder().build(_network(), BuilderConfig(backend="cpu", algorithm_selector=selector, iterations=1))
    convs = [layer for layer in result.manifest.pinned.layers if layer.op == "Conv"]
    assert convs and all(layer.tactic.name == "cpu_tap_accumulate" for layer in convs)
    assert len(selector.reported) == len(result.manifest.pinned.layers)
    stem = selector.contexts[0]
    assert (stem.name, stem.op, stem.inputs[0].shape) == ("stem", "FusedConv", (2, 3, 32, 32)) and len(stem.key) == 64
    assert result.manifest.evidence is not None and result.manifest.evidence.selector == "ForbidIm2col"
    excluded = [c for e in result.manifest.evidence.layers for c in e.candidates if c.tactic.name == "cpu_im2col_gemm"]
    assert excluded and all(c.status == "excluded" and "ForbidIm2col" in c.reason for c in excluded)


def test_a_selector_that_allows_nothing_or_invents_candidates_is_an_error() -> None:
    class Nothing(AlgorithmSelector):
        def select(self, context, candidates):  # type: ignore[no-untyped-def]
            return []

    class Invents(AlgorithmSelector):
        def select(self, context, candidates):  # type: ignore[no-untyped-def]
            return [AlgorithmCandidate("conv", "made_up", 1, "0" * 64, {}, 0, "run_to_run", "numpy", 1)]

    with pytest.raises(BuildError, match="Nothing allowed none of the candidates for layer 'stem'"):
        Builder().build(_network(), BuilderConfig(backend="cpu", algorithm_selector=Nothing()))
    with pytest.raises(BuildError, match="must return a subset"):
        Builder().build(_network(), BuilderConfig(backend="cpu", algorithm_selector=Invents()))


def test_timing_cache_reuses_measurements(tmp_path: Path) -> None:
    path = tmp_path / "timing.cache"
    cache = TimingCache.load(path)
    first = Builder().build(_network(), BuilderConfig(backend="cpu", timing_cache=cache))
    cache.save(path)
    assert first.tactics_timed > 0 and len(cache) > 0
    again = TimingCache.load(path)
    second = Builder().build(_network(), BuilderConfig(backend="cpu", timing_cache=again))
    assert second.tactics_timed == 0
    assert second.manifest.evidence is not None
    assert first.manifest.evidence is not None
    # Layers with identical signatures share entries, so the first build already hits its own measurements.
    total = first.tactics_timed + first.manifest.evidence.timing_cache_hits
    assert second.manifest.evidence.timing_cache_hits == total
    assert second.engine == first.engine  # same samples, same choices, same bytes
    sources = {c.timing_source for e in second.manifest.evidence.layers for c in e.candidates if c.samples_ns}
    assert sources == {"cache"}


def test_timing_cache_keys_separate_timing_configs(tmp_path: Path) -> None:
    cache = TimingCache()
    Builder().build(_network(), BuilderConfig(backend="cpu", timing_cache=cache, iterations=2))
    result = Builder().build(_network(), BuilderConfig(backend="cpu", timing_cache=cache, iterations=3))
    assert result.tactics_timed > 0, "samples for 2 iterations must not stand in for 3"


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"format": "something-else", "version": 1, "entries": {}}', "not a reprobuild timing cache"),
    ('{"format": "reprobuild-timing-cache", "version": 99, "entries": {}}', "format version 99.*Delete the file"),
    ('{"format": "reprobuild-timing-cache", "version": 1, "entries": {"k": {"tactic": "x", "samples_ns": []}}}',
     "malformed"),
])
def test_bad_timing_cache_files_are_format_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "timing.cache"
    path.write_text(content)
    with pytest.raises(FormatError, match=message):
        TimingCache.load(path)


def test_timing_cache_file_is_versioned_and_sorted(tmp_path: Path) -> None:
    cache = TimingCache()
    Builder().build(_network("mlp.onnx"), BuilderConfig(backend="cpu", timing_cache=cache, iterations=1))
    cache.save(tmp_path / "c.json")
    doc = json.loads((tmp_path / "c.json").read_text())
    assert doc["format"] == "reprobuild-timing-cache" and doc["version"] == 1
    assert list(doc["entries"]) == sorted(doc["entries"])

"""Tactics that choose their parameters per layer (a vendor library's algorithms): every variant a candidate of its
own, the chosen one recorded by value, replayed exactly (even where ``variants`` no longer offers it), refused
when its recorded values are not ones the tactic runs with, and run bound by the runtime.

The test tactic is a MatMul that sums its K axis in blocks: each block size rounds differently (so the output's
bits tell which variant ran, and all of them are correct to float32 precision), block sizes under K need a
workspace for the partial product, and its ``random`` order adds the blocks in an order drawn from os.urandom: not
run-to-run deterministic."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from onnx import helper

from reprobuild.builder import (
    AlgorithmCandidate,
    AlgorithmContext,
    AlgorithmSelector,
    Builder,
    BuilderConfig,
    BuildResult,
    ForcingSelector,
    Refitter,
    ReplaySelector,
    TimingCache,
)
from reprobuild.builder.selection import layer_spec
from reprobuild.cli import inspect as inspect_command
from reprobuild.core.errors import BuildError, FormatError, ReplayMismatchError, TacticMismatchError
from reprobuild.core.logger import RecordingLogger, Severity
from reprobuild.diffing import diff
from reprobuild.diffing.render import to_text
from reprobuild.engine import Runtime
from reprobuild.engine.format import FORMAT_VERSION, MAGIC
from reprobuild.frontend import network_from_onnx_bytes
from reprobuild.ir import Network
from reprobuild.kernels import identity
from reprobuild.kernels.backend import Backend
from reprobuild.kernels.identity import check_installed, compute_identity, identity_parameters
from reprobuild.kernels.tactic import Determinism, Kernel, LayerSpec, Tactic, TacticRegistry, workspace_view
from reprobuild.manifest import Manifest, manifest_from_json, manifest_to_json
from reprobuild.registry import default_registry
from tests.helpers import CUDA_SKIP, make_model, run_cli

M, K, N = 8, 64, 16
LABEL = "test_variants.cpu_blocked v1"


class BlockedMatMul(Tactic):
    """[M, K] x [K, N] (a constant), the K axis summed in blocks of ``block``, added in ``order``."""

    family, name, backend, ops = "test_variants", "cpu_blocked", "cpu", ("MatMul",)
    per_layer_parameters = True
    ORDERS = ("ascending", "random")

    def unsupported(self, layer: LayerSpec) -> str | None:
        if [len(s.shape) for s in layer.inputs] != [2, 2] or 1 not in layer.constants:
            return "a 2-D activation times a 2-D constant only"
        return None

    def variants(self, layer: LayerSpec, backend: Backend) -> list[Tactic]:
        assert isinstance(backend, Backend) and backend.name == "cpu"  # the Backend object, not its name
        k = layer.inputs[0].shape[1]
        blocks = [b for b in (1, 4, 16) if b < k] + [k]
        return [*(self.with_parameters({"block": b, "order": "ascending"}) for b in blocks),
                self.with_parameters({"block": 4, "order": "random"})]

    def layer_parameter_problem(self, parameters: Mapping[str, Any]) -> str | None:
        if sorted(parameters) != ["block", "order"]:
            return f"records parameters {sorted(parameters)}; this tactic has block and order"
        block = parameters["block"]
        if not isinstance(block, int) or isinstance(block, bool) or block < 1:
            return f"parameter 'block' is {block!r}; it must be a positive integer (the K block size)"
        if parameters["order"] not in self.ORDERS:
            return f"parameter 'order' is {parameters['order']!r}; it must be one of {', '.join(self.ORDERS)}"
        return None

    def with_parameters(self, parameters: Mapping[str, Any]) -> Tactic:
        bound = super().with_parameters(parameters)
        if bound is not self:  # what a variant promises follows from its values, however it was bound
            bound.determinism = Determinism.NONE if parameters["order"] == "random" else Determinism.RUN_TO_RUN
        return bound

    def workspace_bytes(self, layer: LayerSpec) -> int:
        m, k = layer.inputs[0].shape
        n = layer.outputs[0].shape[1]
        return 0 if int(self.parameters.get("block", k)) >= k else m * n * 4

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        w = np.ascontiguousarray(layer.constants[1], dtype=np.float32)
        block, order = int(self.parameters["block"]), str(self.parameters["order"])
        starts = list(range(0, w.shape[0], block))
        shape = (layer.inputs[0].shape[0], w.shape[1])

        def run(inputs: Sequence[Any], outputs: Sequence[Any], workspace: Any) -> None:
            a, out = inputs[0], outputs[0]
            if len(starts) == 1:
                np.matmul(a, w, out=out)
                return
            seq = starts
            if order == "random":
                rng = np.random.default_rng(int.from_bytes(os.urandom(8), "little"))
                seq = [starts[i] for i in rng.permutation(len(starts))]
            part = workspace_view(workspace, shape)
            out[...] = 0
            for s in seq:
                np.matmul(a[:, s:s + block], w[s:s + block], out=part)
                out += part

        return run


def blocked(a: np.ndarray, w: np.ndarray, block: int) -> np.ndarray:
    """The ascending blocked sum, computed here: what the variant of that block size must give, bit for bit."""
    out = np.zeros((a.shape[0], w.shape[1]), np.float32)
    for s in range(0, w.shape[0], block):
        out += np.matmul(a[:, s:s + block], w[s:s + block])
    return out


class PickVariant(AlgorithmSelector):
    """Allows only the variant with ``parameters`` (forced, untimed)."""

    requires_timing = False

    def __init__(self, **parameters: int | str) -> None:
        self.parameters = parameters

    def select(self, context: AlgorithmContext,
               candidates: Sequence[AlgorithmCandidate]) -> Sequence[AlgorithmCandidate]:
        return [c for c in candidates if c.name == "cpu_blocked" and dict(c.parameters) == self.parameters]


def _model(seed: int = 0) -> bytes:
    w = np.random.default_rng(seed).standard_normal((K, N)).astype(np.float32)
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], {"x": [M, K]}, ["y"], {"w": w})
    return model.SerializeToString()


def _network(seed: int = 0) -> Network:
    return network_from_onnx_bytes(_model(seed))[0]


@pytest.fixture(scope="module")
def registry() -> TacticRegistry:
    return default_registry().with_tactics([BlockedMatMul()])


def _build(registry: TacticRegistry, selector: AlgorithmSelector | None = None, logger: RecordingLogger | None = None,
           **config: Any) -> BuildResult:
    settings = {"backend": "cpu", "iterations": 5, "warmup": 1, **config}
    built = BuilderConfig(**settings)  # type: ignore[arg-type]
    built.algorithm_selector = selector or ForcingSelector({"MatMul": "cpu_blocked"})
    return Builder(logger, registry=registry).build(_network(), built)


@pytest.fixture(scope="module")
def timed(registry: TacticRegistry) -> tuple[BuildResult, RecordingLogger]:
    logger = RecordingLogger()
    return _build(registry, logger=logger), logger


def _replay(registry: TacticRegistry, manifest: Manifest) -> BuildResult:
    config = BuilderConfig.from_record(manifest.pinned.config)
    config.algorithm_selector = ReplaySelector(manifest)
    return Builder(registry=registry).build(_network(), config)


def _edited(manifest: Manifest, **parameters: Any) -> Manifest:
    doc = json.loads(manifest_to_json(manifest))
    doc["pinned"]["layers"][0]["tactic"]["parameters"] = parameters
    return manifest_from_json(json.dumps(doc).encode())


# --- the build -----------------------------------------------------------------------------------------------------


def test_every_variant_is_a_candidate_and_the_chosen_one_is_recorded_by_value(
        timed: tuple[BuildResult, RecordingLogger]) -> None:
    built, logger = timed
    assert built.manifest.evidence is not None
    candidates = built.manifest.evidence.layers[0].candidates
    ours = [c for c in candidates if c.tactic.name == "cpu_blocked"]
    # the tactic's own order, each with its parameters; one code identity for all of them
    assert [dict(c.tactic.parameters) for c in ours] == [
        {"block": 1, "order": "ascending"}, {"block": 4, "order": "ascending"}, {"block": 16, "order": "ascending"},
        {"block": K, "order": "ascending"}, {"block": 4, "order": "random"}]
    assert len({c.tactic.code_sha256 for c in ours}) == 1
    assert [c.workspace_bytes for c in ours] == [M * N * 4] * 3 + [0, 0]  # (an excluded one is not asked)
    random = ours[-1]
    assert random.status == "excluded" and random.determinism == "none"
    assert random.reason == "not run-to-run deterministic, and the build requires run_to_run determinism"
    timed_ones = ours[:-1]
    assert all(c.samples_ns and c.status in ("chosen", "lost") for c in timed_ones)
    chosen = next(c for c in timed_ones if c.status == "chosen")
    layer = built.manifest.pinned.layers[0]
    assert layer.tactic == chosen.tactic and layer.workspace_bytes == chosen.workspace_bytes
    # sixty-four matmuls of one column each cannot beat the one that chose
    slowest = timed_ones[0]
    assert slowest.status == "lost" and (slowest.median_ns or 0) > (chosen.median_ns or 0)
    shown = f"cpu_blocked [block={chosen.tactic.parameters['block']} order=ascending]"
    assert any(f"(MatMul): {shown}" in line for line in logger.messages(Severity.INFO))
    assert all("cpu_blocked [" in c.reason for c in timed_ones if c.status == "lost" and "after" in c.reason)


def test_a_build_that_allows_any_determinism_considers_the_nondeterministic_variant(
        registry: TacticRegistry) -> None:
    built = _build(registry, determinism="any", iterations=1)
    assert built.manifest.evidence is not None
    random = [c for c in built.manifest.evidence.layers[0].candidates if c.tactic.parameters.get("order") == "random"]
    assert len(random) == 1 and random[0].status != "excluded" and random[0].samples_ns


def test_the_workspace_limit_applies_to_each_variant(registry: TacticRegistry) -> None:
    built = _build(registry, max_workspace_bytes=0, iterations=1)
    assert built.manifest.evidence is not None
    ours = [c for c in built.manifest.evidence.layers[0].candidates if c.tactic.name == "cpu_blocked"]
    excluded = [c for c in ours if c.status == "excluded" and "workspace bytes" in c.reason]
    assert [c.tactic.parameters["block"] for c in excluded] == [1, 4, 16]
    assert excluded[0].reason == f"needs {M * N * 4} workspace bytes, over the limit of 0"
    assert dict(built.manifest.pinned.layers[0].tactic.parameters) == {"block": K, "order": "ascending"}


def test_a_selector_sees_every_variant_and_can_pick_one(registry: TacticRegistry) -> None:
    built = _build(registry, PickVariant(block=4, order="ascending"))
    assert dict(built.manifest.pinned.layers[0].tactic.parameters) == {"block": 4, "order": "ascending"}
    assert built.tactics_timed == 0


def test_a_selector_that_returns_a_variant_twice_is_an_error(registry: TacticRegistry) -> None:
    class Twice(AlgorithmSelector):
        def select(self, context: AlgorithmContext,
                   candidates: Sequence[AlgorithmCandidate]) -> Sequence[AlgorithmCandidate]:
            ours = [c for c in candidates if c.name == "cpu_blocked"]
            return [ours[1], ours[1]]

    with pytest.raises(BuildError, match="returned duplicate candidates for layer 'mm'"):
        _build(registry, Twice())


def test_a_variant_offered_twice_is_one_candidate(registry: TacticRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    """(a library's heuristic may list two algorithms that differ only in what is not recorded: a replay could not
    tell them apart, so they are one candidate, the first)"""
    monkeypatch.setattr(BlockedMatMul, "variants", lambda self, layer, backend: [
        self.with_parameters({"block": b, "order": "ascending"}) for b in (4, K, 4)])
    built = _build(registry, iterations=1)
    assert built.manifest.evidence is not None
    ours = [c for c in built.manifest.evidence.layers[0].candidates if c.tactic.name == "cpu_blocked"]
    assert [c.tactic.parameters["block"] for c in ours] == [4, K]


def test_the_timing_cache_keeps_each_variant_apart(registry: TacticRegistry, tmp_path: Path) -> None:
    path = tmp_path / "timing.cache"
    cache = TimingCache.load(path)
    first = _build(registry, iterations=2, timing_cache=cache)
    cache.save(path)
    again = _build(registry, iterations=2, timing_cache=TimingCache.load(path))
    assert again.tactics_timed == 0 and again.manifest.evidence is not None
    ours = [c for c in again.manifest.evidence.layers[0].candidates if c.tactic.name == "cpu_blocked"]
    assert [c.timing_source for c in ours] == ["cache"] * 4 + [None]  # each variant its own entry
    assert first.manifest.evidence is not None
    assert [c.samples_ns for c in ours] == [c.samples_ns for c in first.manifest.evidence.layers[0].candidates
                                            if c.tactic.name == "cpu_blocked"]
    assert again.manifest.pinned.layers[0].tactic == first.manifest.pinned.layers[0].tactic


# --- replay and refit ----------------------------------------------------------------------------------------------


def test_a_replay_forces_the_recorded_variant_and_gives_the_same_engine(
        registry: TacticRegistry, timed: tuple[BuildResult, RecordingLogger]) -> None:
    built = timed[0]
    replayed = _replay(registry, built.manifest)
    assert replayed.engine == built.engine and replayed.manifest.pinned == built.manifest.pinned
    assert replayed.tactics_timed == 0


def test_a_replay_forces_a_recorded_variant_that_variants_no_longer_offers(
        registry: TacticRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    original = _build(registry, PickVariant(block=16, order="ascending"))
    recorded = dict(original.manifest.pinned.layers[0].tactic.parameters)
    offered = BlockedMatMul.variants

    def newer_heuristics(self: BlockedMatMul, layer: LayerSpec, backend: Backend) -> list[Tactic]:
        return [v for v in offered(self, layer, backend) if dict(v.parameters) != recorded]

    monkeypatch.setattr(BlockedMatMul, "variants", newer_heuristics)
    replayed = _replay(registry, original.manifest)
    assert replayed.engine == original.engine
    assert replayed.manifest.evidence is not None
    ours = [c for c in replayed.manifest.evidence.layers[0].candidates if c.tactic.name == "cpu_blocked"]
    assert [c.status for c in ours if dict(c.tactic.parameters) == recorded] == ["chosen"]
    assert ours[-1].status == "chosen"  # offered by the replay, after the tactic's own variants


@pytest.mark.parametrize(("parameters", "problem"), [
    ({"block": 0, "order": "ascending"}, "parameter 'block' is 0; it must be a positive integer"),
    ({"block": 4, "order": "sideways"}, "parameter 'order' is 'sideways'; it must be one of ascending, random"),
    ({"block": 4}, r"records parameters \['block'\]; this tactic has block and order"),
])
def test_a_manifest_edited_to_values_the_tactic_refuses_fails_closed_naming_them(
        registry: TacticRegistry, timed: tuple[BuildResult, RecordingLogger], parameters: dict[str, Any],
        problem: str) -> None:
    edited = _edited(timed[0].manifest, **parameters)
    with pytest.raises(ReplayMismatchError, match=rf"layer 'mm' \(MatMul\): recorded tactic {LABEL} cannot be used "
                                                  rf"here: tactic {LABEL}: {problem}"):
        _replay(registry, edited)


def test_a_manifest_edited_to_another_valid_variant_replays_that_one_then_refuses_the_golden_outputs(
        registry: TacticRegistry) -> None:
    """Another valid variant (of the same workspace) is forced as recorded; the golden digests then tell the edit."""
    original = _build(registry, PickVariant(block=4, order="ascending"))
    with pytest.raises(ReplayMismatchError, match=r"pinned\.golden\.outputs\[0\]\.sha256: recorded"):
        _replay(registry, _edited(original.manifest, block=16, order="ascending"))


def test_a_refit_keeps_the_recorded_variant(registry: TacticRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    original = _build(registry, PickVariant(block=4, order="ascending"))
    monkeypatch.setattr(BlockedMatMul, "variants", lambda self, layer, backend: [])  # offers nothing now
    refitted = Refitter(original.engine, registry=registry).refit_from_model(_model(seed=1))
    assert refitted.manifest.pinned.layers[0].tactic == original.manifest.pinned.layers[0].tactic
    engine = Runtime(registry=registry).deserialize_engine(refitted.engine)
    x = np.random.default_rng(5).standard_normal((M, K)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((K, N)).astype(np.float32)
    out = engine.create_execution_context().execute({"x": x})["y"]
    assert out.tobytes() == blocked(x, w, 4).tobytes()


# --- the engine and the runtime ------------------------------------------------------------------------------------


@pytest.mark.parametrize("block", [4, 16])
def test_the_runtime_runs_the_bound_variant(registry: TacticRegistry, block: int) -> None:
    built = _build(registry, PickVariant(block=block, order="ascending"))
    engine = Runtime(registry=registry).deserialize_engine(built.engine)
    assert dict(engine.layers[0].tactic.parameters) == {"block": block, "order": "ascending"}
    x = np.random.default_rng(7).standard_normal((M, K)).astype(np.float32)
    w = np.random.default_rng(0).standard_normal((K, N)).astype(np.float32)
    out = engine.create_execution_context().execute({"x": x})["y"]
    assert out.tobytes() == blocked(x, w, block).tobytes()  # exactly that variant's rounding ...
    assert out.tobytes() != np.matmul(x, w).tobytes()  # ... which is not the one-block sum's
    np.testing.assert_allclose(out, x.astype(np.float64) @ w.astype(np.float64), rtol=1e-5, atol=1e-5)


def _with_layer_parameters(engine: bytes, parameters: dict[str, Any]) -> bytes:
    """The engine file with layer 0's recorded tactic parameters replaced (and its digest trailer resealed)."""
    _, _, header_len = struct.unpack_from("<8sIQ", engine)
    header = msgpack.unpackb(engine[20:20 + header_len], raw=False)
    buffer = engine[-(-(20 + header_len) // 64) * 64:-32]
    header["layers"][0]["tactic"]["parameters"] = parameters
    packed = msgpack.packb(header, use_bin_type=True)
    head = struct.pack("<8sIQ", MAGIC, FORMAT_VERSION, len(packed)) + packed
    body = head + b"\0" * (-len(head) % 64) + buffer
    return body + hashlib.sha256(body).digest()


def test_an_engine_whose_layer_records_bad_parameters_is_refused_on_load(
        registry: TacticRegistry, timed: tuple[BuildResult, RecordingLogger]) -> None:
    engine = timed[0].engine
    Runtime(registry=registry).deserialize_engine(_with_layer_parameters(
        engine, dict(timed[0].manifest.pinned.layers[0].tactic.parameters)))  # the reseal alone changes nothing
    with pytest.raises(FormatError, match=rf"engine layer 'mm' \(op MatMul\) cannot run tactic {LABEL} with the "
                                          r"parameters it records: parameter 'block' is -2; it must be a positive"):
        Runtime(registry=registry).deserialize_engine(_with_layer_parameters(engine, {"block": -2, "order": "x"}))


def test_a_fixed_parameter_tactic_recorded_with_other_parameters_is_refused_on_load(registry: TacticRegistry) -> None:
    built = _build(registry, ForcingSelector({"MatMul": "cpu_blas"}), iterations=1)
    with pytest.raises(FormatError, match=r"cannot run tactic gemm.cpu_blas v1 with the parameters it records: "
                                          r"recorded with parameters \{'tile': 8\}; the tactic has \{\}"):
        Runtime(registry=registry).deserialize_engine(_with_layer_parameters(built.engine, {"tile": 8}))


def test_resolve_binds_the_recorded_values_and_refuses_bad_ones(registry: TacticRegistry,
                                                               timed: tuple[BuildResult, RecordingLogger]) -> None:
    ref = timed[0].manifest.pinned.layers[0].tactic.model_dump()
    bound = registry.resolve("MatMul", ref)
    assert dict(bound.parameters) == ref["parameters"] and bound is not registry.get("MatMul", "cpu_blocked", 1)
    with pytest.raises(TacticMismatchError, match=rf"tactic {LABEL}: parameter 'block' is 'x'"):
        registry.resolve("MatMul", {**ref, "parameters": {"block": "x", "order": "ascending"}})


# --- identity -------------------------------------------------------------------------------------------------------


def test_every_variant_has_the_identity_of_the_tactic() -> None:
    tactic = BlockedMatMul()
    variant = tactic.with_parameters({"block": 4, "order": "random"})
    assert dict(variant.parameters) == {"block": 4, "order": "random"} and variant.determinism is Determinism.NONE
    assert identity_parameters(variant) == identity_parameters(tactic) == {}
    assert compute_identity(variant) == compute_identity(tactic)
    assert variant.code_sha256 == tactic.code_sha256
    assert tactic.parameters == {} and tactic.determinism is Determinism.RUN_TO_RUN  # the original is untouched


# --- diff and inspect ------------------------------------------------------------------------------------------------


def test_a_diff_of_two_variants_is_a_tactic_change_that_shows_their_values(registry: TacticRegistry) -> None:
    a = _build(registry, PickVariant(block=4, order="ascending"))
    b = _build(registry, PickVariant(block=16, order="ascending"))
    changes = diff(a.manifest, b.manifest).tactic_changes
    assert [(c.layer, dict(c.a.tactic.parameters), dict(c.b.tactic.parameters)) for c in changes] == [
        ("mm", {"block": 4, "order": "ascending"}, {"block": 16, "order": "ascending"})]
    text = to_text(diff(a.manifest, b.manifest))
    assert "block=4, order=ascending" in text and "block=16, order=ascending" in text


def test_inspect_names_the_variant_of_a_layer(registry: TacticRegistry, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    built = _build(registry, PickVariant(block=4, order="ascending"))
    (tmp_path / "mm.engine").write_bytes(built.engine)
    monkeypatch.setattr(inspect_command, "runtime_registry", lambda: registry)
    code, out, _ = run_cli(capsys, "inspect", str(tmp_path / "mm.engine"))
    assert code == 0 and f"{LABEL} [block=4 order=ascending]" in out


def test_a_builtin_per_layer_tactic_takes_its_identity_from_the_lock_whatever_a_layer_binds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The lock records the class's parameters; a variant bound to a layer's values is still that entry (checked
    against the code without a parameter mismatch, and its digest read from the lock, not computed)."""
    entry = compute_identity(BlockedMatMul()).entry()
    assert entry["parameters"] == {}
    monkeypatch.setattr(identity, "_is_builtin", lambda tactic: True)
    monkeypatch.setattr(identity, "locked", lambda: {LABEL: entry})
    tactic = BlockedMatMul()
    check_installed([tactic, *(tactic.with_parameters({"block": b, "order": "ascending"}) for b in (1, 4))])

    def refuse(*args: Any) -> None:
        raise AssertionError("the identity was computed rather than read from the lock")

    monkeypatch.setattr(identity, "compute_identity", refuse)
    assert BlockedMatMul().with_parameters({"block": 16, "order": "random"}).code_sha256 == entry["code_sha256"]


# --- on a GPU: the built-in tactics that choose their parameters per layer (cuBLASLt's algorithms) ----------------


def _cuda_per_layer_tactics() -> list[Tactic]:
    """The built-in CUDA MatMul tactics that choose their parameters per layer and can run here (cuBLASLt's need
    nvmath-python: without it they say so and are left out)."""
    spec = layer_spec(_network(), 0)
    return [t for t in default_registry().candidates("MatMul", "cuda")
            if t.per_layer_parameters and t.ineligibility(spec) is None]


@pytest.mark.gpu
@pytest.mark.skipif(CUDA_SKIP is not None, reason=f"no CUDA: {CUDA_SKIP}")
def test_a_gpu_variant_is_recorded_replayed_exactly_even_unoffered_and_computes_the_matmul(
        monkeypatch: pytest.MonkeyPatch) -> None:
    tactics = _cuda_per_layer_tactics()
    if not tactics:
        pytest.skip("no built-in cuda MatMul tactic chooses its parameters per layer")
    for tactic in tactics:
        tf32 = tactic.math == "tf32"  # allowed only at --precision tf32
        config = BuilderConfig(backend="cuda", iterations=3, warmup=1, precision="tf32" if tf32 else "fp32")
        config.algorithm_selector = ForcingSelector({"MatMul": tactic.name})
        built = Builder().build(_network(), config)
        layer = built.manifest.pinned.layers[0]
        assert layer.tactic.name == tactic.name and tactic.parameter_problem(layer.tactic.parameters) is None
        assert built.manifest.evidence is not None
        offered = [c for c in built.manifest.evidence.layers[0].candidates if c.tactic.name == tactic.name]
        assert len({json.dumps(dict(c.tactic.parameters), sort_keys=True) for c in offered}) == len(offered)
        recorded = dict(layer.tactic.parameters)
        real = type(tactic).variants

        def without_recorded(self: Tactic, spec: LayerSpec, backend: Backend, real: Any = real,
                             recorded: dict[str, Any] = recorded) -> list[Tactic]:
            return [v for v in real(self, spec, backend) if dict(v.parameters) != recorded]

        with monkeypatch.context() as patch:
            patch.setattr(type(tactic), "variants", without_recorded)
            replay = BuilderConfig.from_record(built.manifest.pinned.config)
            replay.algorithm_selector = ReplaySelector(built.manifest)
            assert Builder().build(_network(), replay).engine == built.engine
        engine = Runtime().deserialize_engine(built.engine)
        assert dict(engine.layers[0].tactic.parameters) == recorded
        x = np.random.default_rng(3).standard_normal((M, K)).astype(np.float32)
        w = np.random.default_rng(0).standard_normal((K, N)).astype(np.float64)
        out = engine.create_execution_context().execute({"x": x})["y"]
        tolerance = 2e-2 if tf32 else 1e-4
        np.testing.assert_allclose(np.asarray(out, np.float64), x.astype(np.float64) @ w, rtol=tolerance,
                                   atol=tolerance, err_msg=f"{tactic.label} {recorded}")

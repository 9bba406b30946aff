"""Replay compares the whole pinned layer, in order, and the rest of the pinned manifest after the build: every
difference is listed in one error (the corpus in ``tests/corpus/manifest`` has one file per kind)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from reprobuild.builder import Builder, BuilderConfig, ReplaySelector
from reprobuild.builder import replay as replay_module
from reprobuild.builder.selector import BuildPlan, PlannedLayer
from reprobuild.core.errors import ReplayMismatchError
from reprobuild.core.logger import Logger, Severity
from reprobuild.frontend import network_from_onnx_path
from reprobuild.manifest import Manifest, manifest_from_json, manifest_to_json
from tests.helpers import EXAMPLES

CNN = f"{EXAMPLES}/small_cnn.onnx"
QUIET = Logger(Severity.ERROR)


@pytest.fixture(scope="module")
def timed() -> Any:
    network, _ = network_from_onnx_path(CNN, QUIET)
    return Builder(QUIET).build(network, BuilderConfig(backend="cpu", warmup=0, iterations=1))


def _edited(manifest: Manifest, edit) -> Manifest:  # type: ignore[no-untyped-def]
    doc = json.loads(manifest_to_json(manifest))
    edit(doc)
    return manifest_from_json(json.dumps(doc).encode())


def _replay(manifest: Manifest, policy: str = "strict") -> Any:
    config = BuilderConfig.from_record(manifest.pinned.config)
    config.algorithm_selector = ReplaySelector(manifest, policy, QUIET)
    return Builder(QUIET).build(network_from_onnx_path(CNN, QUIET)[0], config)


def _layer(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(layer for layer in doc["pinned"]["layers"] if layer["name"] == name)


def test_an_untouched_manifest_replays_to_the_same_pinned_manifest(timed: Any) -> None:
    result = _replay(timed.manifest)
    assert result.manifest.pinned == timed.manifest.pinned and result.engine == timed.engine


def test_every_difference_of_every_layer_is_listed_in_one_error(timed: Any) -> None:
    def edit(doc: dict[str, Any]) -> None:
        stem = _layer(doc, "stem")
        stem["attrs"]["strides"] = [2, 2]
        stem["inputs"][0]["shape"] = [1, 3, 32, 32]
        stem["outputs"][0]["dtype"] = "float16"
        _layer(doc, "head")["precision"] = "bf16"
        _layer(doc, "softmax")["attrs"]["extra"] = 1
        layers = doc["pinned"]["layers"]
        layers[4], layers[5] = layers[5], layers[4]

    with pytest.raises(ReplayMismatchError) as err:
        _replay(_edited(timed.manifest, edit))
    text = str(err.value)
    for line in ("layer 'stem' (FusedConv): attribute strides recorded [2, 2], this build [1, 1]",
                 "layer 'stem' (FusedConv): input 0 ('image') shape recorded [1, 3, 32, 32], this build [2, 3, 32, 32]",
                 "layer 'stem' (FusedConv): output 0 ('r1') dtype recorded 'float16', this build 'float32'",
                 "layer 'head' (Gemm): precision recorded bf16, this build fp32",
                 "layer 'softmax' (Softmax): attribute extra recorded 1, this build (absent)",
                 "layer order: position 4 recorded 'branch_b', this build 'branch_a'",
                 "layer order: position 5 recorded 'branch_a', this build 'branch_b'"):
        assert f"  - {line}\n" in text + "\n", text
    assert "7 mismatch(es)" in text


def test_a_long_reordering_is_listed_up_to_a_limit(timed: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replay_module, "MAX_ORDER_LINES", 3)
    with pytest.raises(ReplayMismatchError) as err:
        _replay(_edited(timed.manifest, lambda d: d["pinned"]["layers"].reverse()))
    text = str(err.value)
    assert text.count("layer order: position") == 3
    assert "layer order: and 9 more position(s) differ" in text  # 13 layers reversed: 12 move, the middle stays


def test_the_rest_of_the_pinned_manifest_is_compared_after_the_build(timed: Any) -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc["pinned"]["memory"]["context_bytes"] += 256
        doc["pinned"]["execution"]["cuda_graph"] = True
        doc["pinned"]["golden"]["outputs"][0]["sha256"] = "0" * 64

    with pytest.raises(ReplayMismatchError) as err:
        _replay(_edited(timed.manifest, edit))
    text = str(err.value)
    assert "every decision was honoured" in text and "3 place(s)" in text
    for path in ("pinned.memory.context_bytes", "pinned.execution.cuda_graph", "pinned.golden.outputs[0].sha256"):
        assert f"  - {path}: recorded " in text


def test_where_the_environment_differs_what_it_decides_is_not_compared(timed: Any) -> None:
    """Another machine may compute other golden digests; with the environment difference allowed, the replay
    builds, and the execution mode's prose reason is never compared."""
    def edit(doc: dict[str, Any]) -> None:
        doc["pinned"]["environment"]["numpy"] = "1.0.0"
        doc["pinned"]["golden"]["outputs"][0]["sha256"] = "0" * 64
        doc["pinned"]["execution"]["reason"] = "written by another reprobuild"

    result = _replay(_edited(timed.manifest, edit), "ignore")
    assert result.manifest.pinned == timed.manifest.pinned
    def edit_memory_too(doc: dict[str, Any]) -> None:
        edit(doc)
        doc["pinned"]["memory"]["weights_bytes"] = 1

    with pytest.raises(ReplayMismatchError, match=r"pinned\.memory\.weights_bytes: recorded 1, this build \d+"):
        _replay(_edited(timed.manifest, edit_memory_too), "ignore")


def test_a_plan_made_by_hand_without_records_compares_tactics_only(timed: Any) -> None:
    """A selector test may build a BuildPlan by hand: with no layer records, only keys and tactics are compared."""
    selector = ReplaySelector(timed.manifest, "ignore", QUIET)
    pinned = timed.manifest.pinned
    from reprobuild.builder.selector import AlgorithmCandidate, AlgorithmContext

    layers = []
    for i, record in enumerate(pinned.layers):
        t = record.tactic
        candidate = AlgorithmCandidate(t.family, t.name, t.version, t.code_sha256, dict(t.parameters),
                                       record.workspace_bytes, "run_to_run", "numpy", 0)
        ctx = AlgorithmContext(i, record.name, record.op, record.key, "", (), (), {})
        layers.append(PlannedLayer(ctx, (candidate,), ()))
    selector.begin(BuildPlan(pinned.model, pinned.config, pinned.environment, tuple(layers)))

"""Pinned builds: replay forces the recorded tactics, times nothing, gives identical bytes, and fails closed with
every mismatch listed and a distinct exit code."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from reprobuild.builder import Builder, BuilderConfig, ReplaySelector
from reprobuild.core.errors import EnvironmentMismatchError, ReplayMismatchError
from reprobuild.core.logger import RecordingLogger, Severity
from reprobuild.frontend import network_from_onnx_path
from reprobuild.manifest import Manifest, manifest_from_json, manifest_to_json
from tests.helpers import EXAMPLES, run_cli

CNN = f"{EXAMPLES}/small_cnn.onnx"


def _network():  # type: ignore[no-untyped-def]
    return network_from_onnx_path(CNN)[0]


@pytest.fixture(scope="module")
def timed() -> Any:
    return Builder().build(_network(), BuilderConfig(backend="cpu"))


def _replay(manifest: Manifest, policy: str = "strict", logger: RecordingLogger | None = None, **overrides: Any):  # type: ignore[no-untyped-def]
    config = BuilderConfig.from_record(manifest.pinned.config)
    for key, value in overrides.items():
        setattr(config, key, value)
    config.algorithm_selector = ReplaySelector(manifest, policy, logger)
    return Builder(logger).build(_network(), config)


def _edited(manifest: Manifest, edit) -> Manifest:  # type: ignore[no-untyped-def]
    doc = json.loads(manifest_to_json(manifest))
    edit(doc)
    return manifest_from_json(json.dumps(doc).encode())


def test_timed_build_then_replay_twice_gives_identical_engines(timed: Any) -> None:
    logger = RecordingLogger()
    first = _replay(timed.manifest, logger=logger)
    second = _replay(first.manifest)
    assert first.engine == timed.engine and second.engine == timed.engine
    assert first.manifest.pinned == timed.manifest.pinned == second.manifest.pinned
    assert first.tactics_timed == 0 and second.tactics_timed == 0
    assert first.manifest.evidence is not None and first.manifest.evidence.selector == "ReplaySelector"
    assert all(not c.samples_ns for e in first.manifest.evidence.layers for c in e.candidates)
    assert any("0 tactic timings" in msg for msg in logger.messages(Severity.INFO))
    n = len(timed.manifest.pinned.layers)
    assert any(f"honoured {n}/{n} decisions (100%)" in msg for msg in logger.messages(Severity.INFO))


def _first_layer(doc: dict) -> dict:
    return doc["pinned"]["layers"][0]


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["pinned"]["layers"].pop(0), r"layer 'stem' \(FusedConv, key [0-9a-f]{12}\) is not in the manifest"),
    (lambda d: d["pinned"]["layers"].append(dict(_first_layer(d), key="f" * 64, name="ghost")),
     r"manifest layer 'ghost' \(FusedConv, key f{12}\) is not in this network"),
    (lambda d: _first_layer(d)["tactic"].update(name="cpu_winograd"),
     r"layer 'stem' \(FusedConv\): recorded tactic conv.cpu_winograd v\d+ is not available in this installation"),
    (lambda d: _first_layer(d)["tactic"].update(code_sha256="0" * 64),
     r"layer 'stem' \(FusedConv\): recorded tactic conv.cpu_\w+ v\d+ has code digest 0{16}\.\.\., but this "
     r"installation's is [0-9a-f]{16}\.\.\.: the code it runs changed"),
    (lambda d: d["pinned"]["model"].update(sha256="1" * 64), r"model digest: manifest 1{64}, this model [0-9a-f]{64}"),
    (lambda d: d["pinned"]["config"]["timing"].update(iterations=9),
     r"build config\.timing\.iterations: manifest 9, this build 5"),
], ids=["layer_missing_from_manifest", "manifest_layer_missing_from_network", "tactic_unavailable",
        "code_digest_changed", "model_digest", "build_config"])
def test_each_mismatch_is_named(timed: Any, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    manifest = _edited(timed.manifest, edit)
    with pytest.raises(ReplayMismatchError, match=message):
        _replay(manifest, **({"iterations": 5} if "iterations" in message else {}))


def test_every_mismatch_is_listed_not_just_the_first(timed: Any) -> None:
    def edit(doc: dict) -> None:
        doc["pinned"]["model"]["sha256"] = "1" * 64
        doc["pinned"]["config"]["seed"] = 42
        doc["pinned"]["layers"][0]["tactic"]["name"] = "cpu_winograd"
        doc["pinned"]["layers"][1]["tactic"]["code_sha256"] = "0" * 64
        doc["pinned"]["environment"]["numpy"] = "0.0.1"

    with pytest.raises(ReplayMismatchError) as err:
        _replay(_edited(timed.manifest, edit), seed=0)
    text = str(err.value)
    assert "4 mismatch(es)" in text
    for part in ("model digest", "config.seed: manifest 42, this build 0", "cpu_winograd", "the code it runs changed",
                 "numpy", "0.0.1"):
        assert part in text


def test_a_tactic_excluded_by_the_replay_config_is_a_mismatch(timed: Any) -> None:
    manifest = _edited(timed.manifest, lambda d: d["pinned"]["config"].update(max_workspace_bytes=1000))
    with pytest.raises(ReplayMismatchError, match=r"'stem' \(FusedConv\): recorded tactic conv\.cpu_\w+ v\d+ cannot be "
                                                  r"used here: needs \d+ workspace bytes, over the limit of 1000"):
        _replay(manifest)


def test_strict_environment_policy_refuses_with_a_field_table(timed: Any) -> None:
    manifest = _edited(timed.manifest, lambda d: d["pinned"]["environment"].update(numpy="1.0.0", python="3.0.1"))
    with pytest.raises(EnvironmentMismatchError) as err:
        _replay(manifest)
    text = str(err.value)
    assert "2 field(s)" in text and "--env-policy strict" in text
    numpy_row = next(line for line in text.splitlines() if line.strip().startswith("numpy"))
    assert "1.0.0" in numpy_row and "refused" in numpy_row


def test_compatible_policy_allows_a_python_patch_release_and_says_so(timed: Any) -> None:
    current = timed.manifest.pinned.environment["python"]
    patched = ".".join([*current.split(".")[:2], "999"])
    manifest = _edited(timed.manifest, lambda d: d["pinned"]["environment"].update(python=patched))
    with pytest.raises(EnvironmentMismatchError, match="python"):
        _replay(manifest, "strict")
    logger = RecordingLogger()
    result = _replay(manifest, "compatible", logger)
    warning = "\n".join(logger.messages(Severity.WARNING))
    assert "allowed by --env-policy compatible" in warning and patched in warning and "Python patch" in warning
    assert result.manifest.pinned.environment["python"] == current  # the new manifest records this machine
    numpy_changed = _edited(manifest, lambda d: d["pinned"]["environment"].update(numpy="1.0.0"))
    with pytest.raises(EnvironmentMismatchError, match="numpy"):
        _replay(numpy_changed, "compatible")


def test_ignore_policy_warns_and_builds(timed: Any) -> None:
    manifest = _edited(timed.manifest, lambda d: d["pinned"]["environment"].update(numpy="1.0.0"))
    logger = RecordingLogger()
    result = _replay(manifest, "ignore", logger)
    assert result.tactics_timed == 0
    assert any("ignored by --env-policy ignore" in m and "1.0.0" in m for m in logger.messages(Severity.WARNING))


def test_decisions_not_honoured_are_caught_after_the_build(timed: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A selector bug that lets another tactic through is caught by the 100% check at the end."""
    monkeypatch.setattr(ReplaySelector, "select", lambda self, context, candidates: list(reversed(candidates)))
    with pytest.raises(ReplayMismatchError, match=r"recorded decisions were not honoured: .*stem"):
        _replay(timed.manifest)


# --- the command line -----------------------------------------------------------------------------------------




@pytest.fixture
def pinned_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    code, _, err = run_cli(capsys, "build", CNN, "-o", str(tmp_path / "timed.engine"), "--backend", "cpu",
                        "--iterations", "3")
    assert code == 0, err
    return tmp_path / "timed.manifest.json"


def test_cli_replay_reproduces_the_engine_and_times_nothing(pinned_cli: Path, capsys: pytest.CaptureFixture) -> None:
    tmp = pinned_cli.parent
    code, out, err = run_cli(capsys, "build", CNN, "-o", str(tmp / "r1.engine"), "--replay", str(pinned_cli))
    assert code == 0, err
    assert "0 tactic timings" in out and "every decision honoured" in out
    code, out, err = run_cli(capsys, "build", CNN, "-o", str(tmp / "r2.engine"), "--replay",
                             str(tmp / "r1.manifest.json"), "--iterations", "3", "--backend", "cpu")
    assert code == 0, err
    digests = {hashlib.sha256((tmp / f).read_bytes()).hexdigest() for f in ("timed.engine", "r1.engine", "r2.engine")}
    assert len(digests) == 1 and f"sha256    {digests.pop()}" in out


def test_cli_replay_mismatch_exits_8(pinned_cli: Path, capsys: pytest.CaptureFixture) -> None:
    code, _, err = run_cli(capsys, "build", CNN, "-o", str(pinned_cli.parent / "x.engine"), "--replay", str(pinned_cli),
                        "--iterations", "4")
    assert code == 8 and "config.timing.iterations: manifest 3, this build 4" in err and "Traceback" not in err


def test_cli_environment_mismatch_exits_9(pinned_cli: Path, capsys: pytest.CaptureFixture) -> None:
    doc = json.loads(pinned_cli.read_text())
    doc["pinned"]["environment"]["cpu.model"] = "Imaginary CPU 9000"
    pinned_cli.write_text(json.dumps(doc))
    out_engine = str(pinned_cli.parent / "x.engine")
    code, _, err = run_cli(capsys, "build", CNN, "-o", out_engine, "--replay", str(pinned_cli))
    assert code == 9 and "Imaginary CPU 9000" in err and "cpu.model" in err
    code, _, err = run_cli(capsys, "build", CNN, "-o", out_engine, "--replay", str(pinned_cli),
                           "--env-policy", "ignore")
    assert code == 0 and "Imaginary CPU 9000" in err


def test_cli_replay_of_an_unreadable_manifest_exits_4(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": 1, "pinned": {}}')
    code, _, err = run_cli(capsys, "build", CNN, "-o", str(tmp_path / "x.engine"), "--replay", str(bad))
    assert code == 4 and "does not match the manifest schema" in err


def test_replay_compares_the_engine_digest_with_the_manifest(timed: Any) -> None:
    selector = ReplaySelector(timed.manifest)
    config = BuilderConfig.from_record(timed.manifest.pinned.config)
    config.algorithm_selector = selector
    Builder().build(_network(), config)
    assert selector.digest_verdict == "identical to the engine digest the manifest records"
    wrong = _edited(timed.manifest, lambda d: d["engine"].update(sha256="2" * 64))
    with pytest.raises(ReplayMismatchError, match="determinism bug"):
        _replay(wrong)
    def built_elsewhere(doc: dict) -> None:  # as if recorded on a machine with another NumPy
        doc["pinned"]["environment"]["numpy"] = "1.0.0"
        doc["engine"]["sha256"] = "3" * 64

    moved = _edited(timed.manifest, built_elsewhere)
    selector = ReplaySelector(moved, "ignore")
    config.algorithm_selector = selector
    Builder().build(_network(), config)
    assert "as expected: the environment differs" in selector.digest_verdict

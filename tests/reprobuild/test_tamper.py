"""A manifest cannot be edited unnoticed: ``verify --against``, ``diff`` and ``attest`` compare a manifest that
claims to be an engine's record with the pinned part the engine embeds (whose sha256 the engine records), and
name every field that differs. Before, ``verify --against`` said all was well for a manifest whose dtypes,
shapes, precision, memory figures, environment or golden layer digests were edited."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import EXAMPLES, run_cli

Edit = Callable[[dict[str, Any]], None]


def _layer(pinned: dict[str, Any], name: str) -> dict[str, Any]:
    return next(layer for layer in pinned["layers"] if layer["name"] == name)


#: edit of the pinned part -> the field path the reports must name
EDITS: dict[str, tuple[Edit, str]] = {
    "dtype": (lambda p: _layer(p, "fc1")["outputs"][0].update(dtype="float16"), "layers[fc1].outputs[a1].dtype"),
    "shape": (lambda p: _layer(p, "fc2")["inputs"][0].update(shape=[8, 64]), "layers[fc2].inputs[a1].shape"),
    "precision": (lambda p: _layer(p, "fc3").update(precision="fp16"), "layers[fc3].precision"),
    "memory": (lambda p: p["memory"].update(activation_bytes=256), "memory.activation_bytes"),
    "environment": (lambda p: p["environment"].update(numpy="0.0.1"), "environment.numpy"),
    "golden_layer": (lambda p: p["golden"]["layers"][1].update(sha256="0" * 64), "golden.layers[fc2].sha256"),
    "config": (lambda p: p["config"].update(seed=p["config"]["seed"] + 1), "config.seed"),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    from reprobuild.cli.main import main

    engine = tmp_path_factory.mktemp("tamper") / "mlp.engine"
    assert main(["build", f"{EXAMPLES}/mlp.onnx", "-o", str(engine), "--backend", "cpu", "-q"]) == 0
    return engine, json.loads(engine.with_name("mlp.manifest.json").read_text())


def _edited(built: tuple[Path, dict[str, Any]], tmp_path: Path, edit: Edit, keep_engine: bool = True) -> Path:
    _, document = built
    doc = json.loads(json.dumps(document))
    edit(doc["pinned"])
    if not keep_engine:
        doc.pop("engine")
    path = tmp_path / "edited.manifest.json"
    path.write_text(json.dumps(doc, indent=2, sort_keys=True))
    return path


def test_the_manifest_the_build_wrote_passes_everywhere(built: tuple[Path, dict[str, Any]],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    engine, _ = built
    manifest = str(engine.with_name("mlp.manifest.json"))
    assert run_cli(capsys, "verify", str(engine), "--runs", "1", "--against", manifest)[0] == 0
    code, out, _ = run_cli(capsys, "diff", str(engine), manifest)
    assert code == 0 and "identical" in out
    assert run_cli(capsys, "attest", str(engine), "--manifest", manifest)[0] == 0


@pytest.mark.parametrize("what", sorted(EDITS))
def test_verify_against_an_edited_manifest_names_the_field(built: tuple[Path, dict[str, Any]], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str], what: str) -> None:
    engine, _ = built
    edit, field = EDITS[what]
    for keep_engine in (True, False):  # with the engine's digest, or with the engine record removed
        manifest = _edited(built, tmp_path, edit, keep_engine)
        code, out, err = run_cli(capsys, "verify", str(engine), "--runs", "1", "--against", str(manifest))
        assert code == 4, out + err
        assert "it was edited after the build" in err and f"pinned.{field}: the manifest records" in err, err
        assert "dimension" not in out  # refused before any run


@pytest.mark.parametrize("what", sorted(EDITS))
def test_diff_of_an_engine_and_its_edited_manifest_is_never_identical(built: tuple[Path, dict[str, Any]],
                                                                      tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str],
                                                                      what: str) -> None:
    engine, _ = built
    edit, field = EDITS[what]
    manifest = _edited(built, tmp_path, edit)
    section = field.split(".")[0].split("[")[0]
    ignore = ["--ignore", section, "--ignore", "layers", "--ignore", "config"]
    code, out, err = run_cli(capsys, "diff", str(engine), str(manifest), "--format", "json", *ignore)
    assert code == 1, out + err
    result = json.loads(out)
    assert not result["identical"] and result["summary"].startswith("EDITED: ")
    assert [c for c in result["edited"] if c["path"] == f"pinned.{field}"], result["edited"]
    code, out, _ = run_cli(capsys, "diff", str(manifest), str(engine))
    assert code == 1 and "EDITED" in out and f"pinned.{field}" in out


@pytest.mark.parametrize("what", sorted(EDITS))
def test_attest_with_an_edited_manifest_names_the_field(built: tuple[Path, dict[str, Any]], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str], what: str) -> None:
    engine, _ = built
    edit, field = EDITS[what]
    manifest = _edited(built, tmp_path, edit)
    code, out, err = run_cli(capsys, "attest", str(engine), "--manifest", str(manifest))
    assert code == 4 and out == "", err
    assert f"pinned.{field}: the manifest records" in err


def test_a_manifest_without_an_engine_record_is_compared_by_diff_without_the_claim(
        built: tuple[Path, dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A manifest that records no engine does not claim to be this engine's record: diff shows its differences
    as differences (the precision now among the layer changes), without EDITED."""
    engine, _ = built
    manifest = _edited(built, tmp_path, EDITS["precision"][0], keep_engine=False)
    code, out, _ = run_cli(capsys, "diff", str(engine), str(manifest), "--format", "json")
    result = json.loads(out)
    assert code == 1 and not result["edited"] and "EDITED" not in result["summary"]
    assert [c for c in result["layer_changes"] if c["path"] == "layers.fc3.precision"]

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


def test_the_api_lists_what_a_pinned_part_holds_otherwise_and_the_pytest_assertion_refuses_an_edit(
        built: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    """``check_against`` (the API under ``verify --against``) reported nothing for a manifest whose edit changes
    no output (the onnx_nodes of a layer, the order of the passes: found by the fuzz campaign), and
    ``reprobuild.testing.assert_matches_golden`` passed it; now the result lists the fields and the assertion fails
    for a manifest that records this engine."""
    from reprobuild.engine import Runtime
    from reprobuild.manifest import read_manifest
    from reprobuild.testing import assert_matches_golden
    from reprobuild.verify.run import check_against

    engine_path, _ = built
    engine = Runtime().deserialize_engine(engine_path.read_bytes())
    edits: dict[str, Edit] = {
        "layers[fc1].onnx_nodes": lambda p: _layer(p, "fc1").update(onnx_nodes=["x"]),
        "config.passes(order)": lambda p: p["config"]["passes"].reverse(),
    }
    for field, edit in edits.items():
        path = _edited(built, tmp_path, edit)
        manifest = read_manifest(str(path))
        result, _ = check_against(engine, manifest.pinned)
        assert result.matched, field  # the outputs are the golden ones all the same
        assert any(line.startswith(f"pinned.{field}:") for line in result.record_differences), \
            (field, result.record_differences)
        with pytest.raises(AssertionError, match=r"records this engine, but its pinned part is not"):
            assert_matches_golden(engine, path)
    untouched = read_manifest(str(engine_path.with_name("mlp.manifest.json")))
    assert check_against(engine, untouched.pinned)[0].record_differences == []
    assert_matches_golden(engine, engine_path.with_name("mlp.manifest.json"))

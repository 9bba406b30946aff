"""reprobuild attest: an in-toto Statement v1 with an SLSA provenance v1 predicate for an engine file."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from reprobuild.core.errors import FormatError, UsageError
from reprobuild.engine.format import deserialize_engine
from reprobuild.provenance.attest import BUILD_TYPE, PREDICATE_TYPE, STATEMENT_TYPE, check_statement, make_statement
from tests.helpers import EXAMPLES, cli_env, run_cli
from tests.test_docs import section_blocks

MLP = f"{EXAMPLES}/mlp.onnx"


@pytest.fixture
def built(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    engine = tmp_path / "mlp.engine"
    code, _, err = run_cli(capsys, "build", MLP, "-o", str(engine), "--backend", "cpu", "-q")
    assert code == 0, err
    return engine


def _dependencies(statement: dict) -> dict[str, dict]:
    return {d["name"]: d for d in statement["predicate"]["buildDefinition"]["resolvedDependencies"]}


def test_statement_names_the_engine_model_manifest_and_toolchain(built: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    manifest = built.with_name("mlp.manifest.json")
    out = tmp_path / "statement.json"
    code, stdout, err = run_cli(capsys, "attest", str(built), "--manifest", str(manifest), "--model", MLP,
                                "-o", str(out))
    assert code == 0, err
    assert "statement" in stdout and str(out) in stdout
    data = out.read_bytes()
    statement = json.loads(data)
    # canonical JSON: sorted keys, no spaces, one newline
    assert data == json.dumps(statement, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    assert check_statement(statement) == []
    assert statement["_type"] == STATEMENT_TYPE and statement["predicateType"] == PREDICATE_TYPE
    (subject,) = statement["subject"]
    assert subject == {"name": "mlp.engine", "digest": {"sha256": hashlib.sha256(built.read_bytes()).hexdigest()}}

    recorded = json.loads(manifest.read_text())
    definition = statement["predicate"]["buildDefinition"]
    assert definition["buildType"] == BUILD_TYPE
    assert definition["externalParameters"]["config"] == recorded["pinned"]["config"]
    assert definition["internalParameters"]["environment"] == recorded["pinned"]["environment"]
    deps = _dependencies(statement)
    model = deps["mlp.onnx"]
    assert model["digest"]["sha256"] == recorded["pinned"]["model"]["sha256"] == hashlib.sha256(
        Path(MLP).read_bytes()).hexdigest()
    assert model["annotations"]["checked_against_file"] is True
    header, _ = deserialize_engine(built.read_bytes())
    assert deps["pinned-manifest.json"]["digest"]["sha256"] == header.manifest_sha256
    environment = recorded["pinned"]["environment"]
    assert deps["numpy"]["uri"] == f"pkg:pypi/numpy@{environment['numpy']}"
    assert deps["python"]["uri"] == f"pkg:generic/python@{environment['python']}"
    assert deps["reprobuild"]["uri"] == f"pkg:pypi/reprobuild@{environment['reprobuild']}"
    assert deps["onnx"]["uri"].startswith("pkg:pypi/onnx@") and "cupy" not in deps  # a cpu build
    run_details = statement["predicate"]["runDetails"]
    assert run_details["byproducts"][0]["digest"]["sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert run_details["metadata"]["startedOn"] == recorded["evidence"]["started_at"]

    # The same inputs give the same bytes; without -o the statement goes to stdout; without --manifest the
    # engine alone still names the model's and the pinned manifest's digests.
    code, stdout, _ = run_cli(capsys, "attest", str(built), "--manifest", str(manifest), "--model", MLP)
    assert code == 0 and stdout.encode() == data
    alone = make_statement(built.read_bytes(), "mlp.engine")
    assert check_statement(alone) == [] and _dependencies(alone)["model.onnx"]["digest"] == model["digest"]
    assert _dependencies(alone)["model.onnx"]["annotations"]["checked_against_file"] is False


def test_corrupted_engine_exits_4(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = bytearray(built.read_bytes())
    data[len(data) // 2] ^= 0xFF
    built.write_bytes(bytes(data))
    with pytest.raises(FormatError):
        make_statement(bytes(data), built.name)
    code, out, err = run_cli(capsys, "attest", str(built))
    assert code == 4 and "corrupted or truncated" in err and out == "" and "Traceback" not in err


def test_another_model_or_manifest_is_refused(built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "attest", str(built), "--model", f"{EXAMPLES}/small_cnn.onnx")
    assert code == 2 and "is not the model engine 'mlp.engine' was built from" in err
    other = tmp_path / "other.engine"
    assert run_cli(capsys, "build", MLP, "-o", str(other), "--backend", "cpu", "--seed", "3", "-q")[0] == 0
    with pytest.raises(UsageError, match="they are not a pair"):
        make_statement(built.read_bytes(), built.name, str(tmp_path / "other.manifest.json"))
    code, _, err = run_cli(capsys, "attest", str(built), "--manifest", str(tmp_path / "other.manifest.json"),
                           "-o", str(tmp_path / "s.json"))
    assert code == 2 and "they are not a pair" in err and not (tmp_path / "s.json").exists()


def test_check_statement_finds_missing_parts() -> None:
    assert check_statement([]) == ["the statement is not a JSON object"]
    problems = check_statement({"_type": STATEMENT_TYPE, "subject": [{"name": "e"}], "predicateType": PREDICATE_TYPE,
                                "predicate": {"buildDefinition": {"buildType": BUILD_TYPE}, "runDetails": {}}})
    assert any("no digest" in p for p in problems) and any("externalParameters" in p for p in problems)
    assert any("builder.id" in p for p in problems)


def test_readme_attest_commands_run_as_written(tmp_path: Path) -> None:
    (block,) = section_blocks("Attesting a build", "bash")
    shutil.copytree(EXAMPLES, tmp_path / "examples", ignore=shutil.ignore_patterns("*.py"))
    for command in block.strip().splitlines():
        result = subprocess.run(command, shell=True, cwd=tmp_path, env=cli_env(), capture_output=True, text=True)
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    statement = json.loads((tmp_path / "mlp.intoto.json").read_text())
    assert check_statement(statement) == []
    assert statement["subject"][0]["digest"]["sha256"] == hashlib.sha256((tmp_path / "mlp.engine").read_bytes()
                                                                         ).hexdigest()

"""The command line: the main jobs end to end, and one clear message with a documented exit code per error."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from reprobuild.cli.main import main
from reprobuild.core.digest import array_digest
from reprobuild.core.errors import EXIT_CODES
from tests.helpers import CUDA_SKIP, EXAMPLES, make_model, ort_run, rel_error, run_cli


@pytest.fixture
def built(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    engine = tmp_path / "mlp.engine"
    code, _, err = run_cli(capsys, "build", f"{EXAMPLES}/mlp.onnx", "-o", str(engine), "--backend", "cpu")
    assert code == 0, err
    return engine


def test_build_writes_engine_and_manifest_and_prints_the_digest(built: Path, capsys: pytest.CaptureFixture) -> None:
    manifest = built.with_name("mlp.manifest.json")
    assert built.exists() and manifest.exists()
    digest = hashlib.sha256(built.read_bytes()).hexdigest()
    assert json.loads(manifest.read_text())["engine"]["sha256"] == digest
    code, out, _ = run_cli(capsys, "build", f"{EXAMPLES}/mlp.onnx", "-o", str(built), "--backend", "cpu", "-q")
    assert code == 0 and f"sha256    {hashlib.sha256(built.read_bytes()).hexdigest()}" in out


@pytest.mark.parametrize("example, input_name, shape",
                         [("mlp", "input", (8, 64)), ("small_cnn", "image", (2, 3, 32, 32))])
def test_build_then_run_matches_onnxruntime(example: str, input_name: str, shape: tuple[int, ...], tmp_path: Path,
                                            capsys: pytest.CaptureFixture, rng: np.random.Generator) -> None:
    engine = tmp_path / f"{example}.engine"
    code, _, err = run_cli(capsys, "build", f"{EXAMPLES}/{example}.onnx", "-o", str(engine), "--backend", "cpu")
    assert code == 0, err
    x = rng.standard_normal(shape).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code, out, err = run_cli(capsys, "run", str(engine), "--input", f"{input_name}={tmp_path / 'x.npy'}",
                         "--output-dir", str(tmp_path / "out"))
    assert code == 0, err
    result = np.load(tmp_path / "out" / "probs.npy")
    (reference,) = ort_run(onnx.load(f"{EXAMPLES}/{example}.onnx"), {input_name: x})
    assert rel_error(result, reference) <= 1e-5
    assert array_digest(result)[:16] in out


def test_inspect_shows_layers_tactics_memory_and_digests(built: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run_cli(capsys, "inspect", str(built))
    assert code == 0
    for text in ("fc1", "Gemm", "gemm.cpu_", "memory", "weights", "kernel source", "environment", "sha256", "golden"):
        assert text in out
    code, out, _ = run_cli(capsys, "inspect", str(built), "--json")
    assert code == 0 and json.loads(out)["pinned"]["config"]["backend"] == "cpu"


def test_missing_model_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, _, err = run_cli(capsys, "build", str(tmp_path / "nope.onnx"))
    assert code == 2 and "cannot read model" in err and "Traceback" not in err


def test_unsupported_model_exits_3_with_the_node_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "unique.onnx"
    model = make_model([helper.make_node("Unique", ["x"], ["y"], name="act")], {"x": (2,)}, ["y"])
    onnx.save(model, path)
    code, _, err = run_cli(capsys, "build", str(path), "-o", str(tmp_path / "t.engine"))
    assert code == 3 and "'act'" in err and "Unique" in err and "Traceback" not in err


def test_corrupted_engine_exits_4(built: Path, capsys: pytest.CaptureFixture) -> None:
    data = bytearray(built.read_bytes())
    data[len(data) // 2] ^= 0xFF
    built.write_bytes(bytes(data))
    for command in ("run", "inspect"):
        code, _, err = run_cli(capsys, command, str(built), "--seed", "0") if command == "run" else \
            run_cli(capsys, command, str(built))
        assert code == 4 and "corrupted or truncated" in err


@pytest.mark.skipif(CUDA_SKIP is None, reason="a CUDA device is usable here, so --backend cuda works")
def test_unavailable_backend_exits_5(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, _, err = run_cli(capsys, "build", f"{EXAMPLES}/mlp.onnx", "-o", str(tmp_path / "m.engine"),
                           "--backend", "cuda")
    assert code == 5 and "cuda backend cannot be used" in err and "--backend cpu" in err


def test_wrong_input_exits_7(built: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    np.save(tmp_path / "bad.npy", np.zeros((3, 64), np.float32))
    code, _, err = run_cli(capsys, "run", str(built), "--input", f"input={tmp_path / 'bad.npy'}")
    assert code == 7 and "shape [3, 64]" in err
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    code, _, err = run_cli(capsys, "run", str(built), "--input", f"input={tmp_path / 'obj.npy'}")
    assert code == 7 and "not a plain .npy" in err
    code, _, err = run_cli(capsys, "run", str(built))
    assert code == 7 and "no value for input(s) ['input']" in err and "--seed SEED" in err


def test_malformed_option_is_an_argparse_usage_error(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["build", "m.onnx", "--input-shape", "data"])
    assert exit_.value.code == 2 and "NAME=DxDx" in capsys.readouterr().err


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for code, meaning in EXIT_CODES:
        assert f"{code:>3}  {meaning}" in out


def test_console_script_is_installed() -> None:
    exe = shutil.which("reprobuild") or str(Path(sys.executable).with_name("reprobuild"))
    result = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("reprobuild ")


def test_conformance_command_reports_cases_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import json

    code, out, err = run_cli(capsys, "conformance", "--suite", "node", "--op", "Relu", "--case", "relu", "-v",
                             "--jobs", "1", "-q")
    assert code == 0, err
    assert "node:test_relu" in out and "pass" in out and "suite" in out
    report = tmp_path / "c.json"
    code, _, err = run_cli(capsys, "conformance", "--suite", "pytorch", "--case", "test_ReLU", "--format", "json",
                           "--output", str(report), "--jobs", "1", "-q")
    assert code == 0, err
    data = json.loads(report.read_text())
    assert data["summary"]["pytorch"]["pass"] >= 1 and all(r["result"] == "pass" for r in data["results"])
    code, _, err = run_cli(capsys, "conformance", "--suite", "node", "--case", "no_such_case", "-q")
    assert code == 2 and "no case matches" in err

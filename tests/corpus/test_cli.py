"""Hardening of the command line (issue 10): each case a user can cause ends with one clear message and its
documented exit code (never 1, the internal-error code), and never with a traceback.

In-process cases call ``main`` (and the subcommand's ``run`` to see the error class); signals and pipes are
tested on subprocesses. Where timing would decide the outcome (a signal during start-up or a build), a small
harness script makes the process announce that it reached the point under test and wait there, so the tests
never race.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from reprobuild.cli.common import parse_seed
from reprobuild.cli.main import main, make_parser
from reprobuild.core.errors import InputError, ModelError, ReprobuildError, ResourceError, UsageError
from reprobuild.verify.tolerance import check_model_bindings, load_reference_model
from tests.helpers import EXAMPLES, cli_env, make_model, run_cli

MLP = f"{EXAMPLES}/mlp.onnx"
CNN = f"{EXAMPLES}/small_cnn.onnx"
POSIX = pytest.mark.skipif(os.name != "posix", reason="POSIX signals and pipes")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """mlp.engine and mlp.manifest.json, built once for the module (the tests only read them)."""
    directory = tmp_path_factory.mktemp("pair")
    engine = directory / "mlp.engine"
    assert main(["build", MLP, "-o", str(engine), "--backend", "cpu", "-q"]) == 0
    yield engine


def _expect_error(argv: list[str], error: type[ReprobuildError]) -> ReprobuildError:
    """Run the subcommand in-process, as main does, and return the typed error it raises."""
    args = make_parser().parse_args(argv)
    with pytest.raises(error) as caught:
        args.run(args)
    return caught.value


def _quiet_failure(code: int, err: str, expected: int) -> None:
    assert code == expected, err
    assert code != 1 and "Traceback" not in err and "internal error" not in err, err


def _temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".reprobuild-"))


# 1 -----------------------------------------------------------------------------------------------------------


def test_compare_refuses_another_model_and_a_file_that_is_not_onnx(pair: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    error = _expect_error(["compare", str(pair), CNN], UsageError)
    assert "['image']" in str(error) and "['input']" in str(error)
    code, _, err = run_cli(capsys, "compare", str(pair), CNN)
    _quiet_failure(code, err, 2)
    assert "has the inputs ['image'], but engine" in err and "has ['input']" in err and "built from" in err

    notes = tmp_path / "notes.txt"
    notes.write_text("not a model\n")
    error = _expect_error(["compare", str(pair), str(notes)], ModelError)
    assert "not a readable ONNX model" in str(error)
    code, _, err = run_cli(capsys, "compare", str(pair), str(notes))
    _quiet_failure(code, err, 3)
    code, _, err = run_cli(capsys, "compare", str(pair), str(tmp_path))  # a directory as the model
    _quiet_failure(code, err, 2)
    assert "is a directory" in err
    with pytest.raises(ModelError):
        load_reference_model(b"\x08\x07garbage")
    model = load_reference_model(Path(MLP).read_bytes())
    with pytest.raises(UsageError, match="outputs"):
        check_model_bindings(model, ["input"], ["probs", "logits"])


# 2 -----------------------------------------------------------------------------------------------------------


@POSIX
def test_output_into_a_closed_pipe_stops_quietly_with_141(pair: Path, tmp_path: Path) -> None:
    manifest = pair.with_name("mlp.manifest.json")
    for argv in (["inspect", str(pair)], ["diff", str(manifest), str(pair)], ["attest", str(pair)]):
        read_end, write_end = os.pipe()
        os.close(read_end)  # the reader is gone before the first byte: every write fails with EPIPE
        try:
            result = subprocess.run([sys.executable, "-m", "reprobuild", *argv], stdout=write_end,
                                    stderr=subprocess.PIPE, text=True, env=cli_env(), timeout=120)
        finally:
            os.close(write_end)
        assert result.returncode == 141, f"{argv}: {result.stderr}"
        assert result.stderr == "", f"{argv}: {result.stderr}"  # no traceback, no "Exception ignored"

    script = f"set -o pipefail; {sys.executable} -m reprobuild inspect {pair} | head -1"
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=cli_env(), timeout=120)
    assert result.returncode in (0, 141), result.stderr  # 0 when head read after the one write, as for coreutils
    assert result.stdout == f"engine      {pair}\n" and result.stderr == ""


# 3 -----------------------------------------------------------------------------------------------------------


def test_build_with_a_directory_as_the_manifest_exits_2_before_building(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    engine, directory = tmp_path / "out.engine", tmp_path / "manifest_dir"
    directory.mkdir()
    argv = ["build", MLP, "-o", str(engine), "--manifest", str(directory), "--backend", "cpu"]
    error = _expect_error(argv, UsageError)
    assert "is a directory" in str(error)
    code, out, err = run_cli(capsys, *argv)
    _quiet_failure(code, err, 2)
    assert "--manifest" in err and "is a directory" in err
    assert "tactic selection" not in err and out == ""  # refused before the build began
    assert not engine.exists() and _temp_files(tmp_path) == [] and list(directory.iterdir()) == []


# 4 -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["build", MLP, "--seed", "-1"],
    ["verify", "e.engine", "--seed", "-1"],
    ["compare", "e.engine", MLP, "--seed", "-1"],
    ["run", "e.engine", "--seed", "-1"],
    ["run", "e.engine", "--random-inputs", "-1"],  # the deprecated spelling, until it goes
])
def test_negative_seeds_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert f"argument {argv[-2]}: a seed must be an integer from 0 to 2**64 - 1" in err
    assert "got -1: a seed is never negative" in err and "Traceback" not in err
    assert parse_seed("0") == 0 and parse_seed(str(2**64 - 1)) == 2**64 - 1
    for bad in ("-1", str(2**64), "1.5", "seven"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_seed(bad)


# 5 -----------------------------------------------------------------------------------------------------------


STARTUP_HARNESS = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # as an interactive shell leaves it
import reprobuild.cli.main as cli
load = cli._load_commands
def slow_load():  # the guarded region where the subcommands (NumPy, onnx, the builder) are imported
    print("LOADING", file=sys.stderr, flush=True)
    time.sleep(120)
    return load()
cli._load_commands = slow_load
sys.exit(cli.main(sys.argv[1:]))
"""


@POSIX
def test_ctrl_c_during_start_up_prints_interrupted_and_exits_130(pair: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # What runs before main's guarded region is small: the package and the CLI module load no NumPy.
    probe = subprocess.run([sys.executable, "-c", "import sys, reprobuild.cli.main; "
                            "print(sorted(m for m in ('numpy', 'onnx', 'pydantic', 'reprobuild.builder') "
                            "if m in sys.modules))"], capture_output=True, text=True, env=cli_env(), timeout=60)
    assert probe.stdout.strip() == "[]", probe.stdout + probe.stderr

    process = subprocess.Popen([sys.executable, "-c", STARTUP_HARNESS, "inspect", str(pair)], env=cli_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        assert process.stderr.readline() == "LOADING\n"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 130, err
    assert err.strip() == "reprobuild: interrupted" and out == ""

    def interrupted() -> list[object]:
        raise KeyboardInterrupt

    monkeypatch.setattr("reprobuild.cli.main._load_commands", interrupted)
    code, _, err = run_cli(capsys, "inspect", str(pair))
    assert code == 130 and err == "reprobuild: interrupted\n"


# 6 -----------------------------------------------------------------------------------------------------------


TERM_HARNESS = """
import sys, time
import reprobuild.cli.build as build
import reprobuild.core.fileio as fileio
from reprobuild.cli.main import main
where = sys.argv[1]
def pause():
    print("READY", file=sys.stderr, flush=True)
    time.sleep(120)
if where == "building":
    step = build.CliProgress.step_complete
    def slow_step(self, *args):
        pause()
        return step(self, *args)
    build.CliProgress.step_complete = slow_step
else:
    fill = fileio._fill
    def slow_fill(fd, tmp, data):  # the engine's temp file is written; the manifest's is not yet
        fill(fd, tmp, data)
        pause()
    fileio._fill = slow_fill
sys.exit(main(sys.argv[2:]))
"""


def test_mismatched_engine_and_manifest_are_not_a_pair(pair: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    old_manifest = pair.with_name("mlp.manifest.json")
    new_engine = tmp_path / "seed1.engine"
    code, _, err = run_cli(capsys, "build", MLP, "-o", str(new_engine), "--backend", "cpu", "--seed", "1", "-q")
    assert code == 0, err
    old = json.loads(old_manifest.read_text())["engine"]["sha256"]
    new = hashlib.sha256(new_engine.read_bytes()).hexdigest()
    assert old != new

    error = _expect_error(["verify", str(new_engine), "--against", str(old_manifest)], UsageError)
    expected = (f"the manifest records engine sha256 {old[:16]}..., but {new_engine} is {new[:16]}...: they are "
                "not a pair; rebuild, or pass the manifest written with this engine")
    assert str(error) == expected
    code, out, err = run_cli(capsys, "verify", str(new_engine), "--against", str(old_manifest), "-q")
    _quiet_failure(code, err, 2)
    assert expected in err and "verdict" not in out  # refused before any run

    code, out, err = run_cli(capsys, "diff", str(new_engine), str(old_manifest))  # diff(1): 1 = they differ
    assert code == 1 and err == "", err
    assert out.startswith(f"reprobuild diff: not a pair: {old_manifest} records engine sha256 {old[:16]}..., but "
                          f"{new_engine} is {new[:16]}...")
    code, out, _ = run_cli(capsys, "diff", str(old_manifest), str(pair))  # the real pair
    assert code == 0 and "not a pair" not in out


@POSIX
@pytest.mark.parametrize("where", ["building", "writing"])
def test_sigterm_during_a_build_leaves_no_temp_files_and_exits_143(where: str, tmp_path: Path) -> None:
    engine, manifest = tmp_path / "m.engine", tmp_path / "m.manifest.json"
    process = subprocess.Popen([sys.executable, "-c", TERM_HARNESS, where, "build", MLP, "-o", str(engine),
                                "--backend", "cpu"], cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        lines = []
        while not lines or lines[-1] not in ("READY\n", ""):
            lines.append(process.stderr.readline())
        assert lines[-1] == "READY\n", "".join(lines)
        if where == "writing":
            assert len(_temp_files(tmp_path)) == 1  # the signal really lands while a temp file exists
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 143, err
    assert "terminated (SIGTERM); partial files were removed" in err and "Traceback" not in err
    assert _temp_files(tmp_path) == [] and not engine.exists() and not manifest.exists()


# 7 -----------------------------------------------------------------------------------------------------------


def test_verify_reports_nan_and_infinite_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nodes = [helper.make_node("Abs", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["n"]),
             helper.make_node("Sub", ["n", "one"], ["m"]), helper.make_node("Sqrt", ["m"], ["nan_out"]),
             helper.make_node("Mul", ["x", "zero"], ["z"]), helper.make_node("Reciprocal", ["z"], ["inf_out"]),
             helper.make_node("Relu", ["x"], ["fine"])]
    model = make_model(nodes, {"x": (2, 3)}, ["nan_out", "inf_out", "fine"],
                       {"one": np.array(1, np.float32), "zero": np.array(0, np.float32)})
    onnx.save(model, tmp_path / "nonfinite.onnx")
    engine = tmp_path / "nonfinite.engine"
    code, _, err = run_cli(capsys, "build", str(tmp_path / "nonfinite.onnx"), "-o", str(engine), "--backend",
                           "cpu", "-q")
    assert code == 0, err

    code, out, err = run_cli(capsys, "verify", str(engine), "-q", "--report", str(tmp_path / "v.json"))
    assert code == 0, err  # the same NaN bits every run: deterministic, with a warning
    assert "warning    not finite: nan_out has 6 NaN of 6 elements" in out
    assert "inf_out has " in out and "+inf" in out and "-inf of 6 elements" in out and "fine" not in out.split(
        "warning")[-1]
    assert "verdict    deterministic, 2 output(s) NOT FINITE" in out
    report = {r["output"]: r for r in json.loads((tmp_path / "v.json").read_text())["nonfinite"]}
    assert set(report) == {"nan_out", "inf_out"} and report["nan_out"]["nan"] == 6
    assert report["inf_out"]["posinf"] + report["inf_out"]["neginf"] == 6

    code, out, err = run_cli(capsys, "verify", str(engine), "-q", "--fail-on-nonfinite")
    _quiet_failure(code, err, 11)
    assert "--fail-on-nonfinite: nan_out has 6 NaN of 6 elements" in err


# 8 -----------------------------------------------------------------------------------------------------------


def test_max_memory_caps_builds_and_engines_with_exit_13(pair: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    engine = tmp_path / "m.engine"
    argv = ["build", MLP, "-o", str(engine), "--backend", "cpu", "--max-memory", "1K"]
    error = _expect_error(argv, ResourceError)
    assert "over the cap set by --max-memory" in str(error)
    code, _, err = run_cli(capsys, *argv)
    _quiet_failure(code, err, 13)
    assert not engine.exists() and _temp_files(tmp_path) == []
    for command in (["run", str(pair), "--seed", "0"], ["verify", str(pair)], ["compare", str(pair), MLP]):
        _expect_error([*command, "--max-memory", "1K"], ResourceError)
        code, _, err = run_cli(capsys, *command, "--max-memory", "1K")
        _quiet_failure(code, err, 13)
        assert "the cap is 1024 bytes" in err
        code, _, err = run_cli(capsys, *command, "--max-memory", "1G", "-q")
        assert code == 0, err
    with pytest.raises(SystemExit) as exit_:
        main(["build", MLP, "--max-memory", "0"])
    assert exit_.value.code == 2 and "no memory at all" in capsys.readouterr().err


# issue 20 (found by the fuzz campaign) -----------------------------------------------------------------------


def _npy(header: bytes, length: int | None = None) -> bytes:
    """A version 1.0 .npy file with this header text (padded as numpy pads it) and its length field (or a lie)."""
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + (len(header) if length is None else length).to_bytes(2, "little") + header + bytes(64)


@pytest.mark.parametrize(("name", "data", "why"), [
    # the length field cuts the header inside its dict: numpy's retry through tokenize raised TokenError
    ("header_cut_short", _npy(b"{'descr': '<f4', 'fortran_order': False, 'shape': (8, 64)}", 20),
     r"TokenError: EOF in multi-line statement"),
    # a dict key that is a list: ast.literal_eval raised TypeError
    ("unhashable_key", _npy(b"{[1]: 2}"), r"TypeError: unhashable type: 'list'"),
])
def test_a_npy_input_with_a_malformed_header_is_an_input_error(pair: Path, tmp_path: Path, name: str, data: bytes,
                                                               why: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / f"{name}.npy"
    path.write_bytes(data)
    error = _expect_error(["run", str(pair), "--input", f"input={path}"], InputError)
    assert re.search(rf"input 'input': '.*{name}\.npy' has no valid \.npy header \({why}\)\. Save the array with "
                     r"numpy\.save", str(error)), str(error)
    code, _, err = run_cli(capsys, "run", str(pair), "--input", f"input={path}")
    _quiet_failure(code, err, 7)
    assert "has no valid .npy header" in err

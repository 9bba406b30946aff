"""The command line's rough edges of issue 20 (findings 9 and 10): one tensor digest in every command, and
options that say what they do."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from onnx import helper, numpy_helper

from reprobuild import __version__
from reprobuild.builder import BuilderConfig
from reprobuild.cli.main import main, make_parser
from reprobuild.conformance import Case, run_case
from reprobuild.core.digest import TENSOR_DIGEST_LABEL
from reprobuild.core.errors import UsageError
from reprobuild.core.versions import installed_any
from reprobuild.verify.tolerance import onnxruntime_outputs
from tests.helpers import EXAMPLES, make_model, run_cli

MLP = f"{EXAMPLES}/mlp.onnx"


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mlp.engine and its manifest, built once with --seed 3 (the tests only read them)."""
    engine = tmp_path_factory.mktemp("mlp") / "mlp.engine"
    assert main(["build", MLP, "-o", str(engine), "--backend", "cpu", "--seed", "3", "-q"]) == 0
    return engine


def test_run_inspect_and_the_manifest_show_one_digest_of_a_tensor(mlp: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """`run` printed the sha256 of the raw bytes while the manifest and `inspect` hold the digest over (dtype,
    shape, bytes): one tensor showed two digests. Now both print the manifest's, under one label."""
    golden = json.loads(mlp.with_name("mlp.manifest.json").read_text())["pinned"]["golden"]
    (recorded,) = golden["outputs"]
    code, out, err = run_cli(capsys, "run", str(mlp), "--seed", "3")
    assert code == 0, err
    assert TENSOR_DIGEST_LABEL in out.splitlines()[1]  # the table's header
    assert f" {recorded['sha256'][:16]} " in out
    code, out, err = run_cli(capsys, "run", str(mlp), "--seed", "3", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["outputs"][recorded["name"]]["sha256"] == recorded["sha256"]
    assert [{"name": k, "sha256": v["sha256"]} for k, v in doc["inputs"].items()] == golden["inputs"]
    code, out, err = run_cli(capsys, "inspect", str(mlp))
    assert code == 0, err
    assert f"{TENSOR_DIGEST_LABEL}: {recorded['name']} {recorded['sha256'][:16]}" in out


@pytest.mark.parametrize("command", ["build", "run", "bench", "compare", "verify"])
def test_device_on_the_cpu_is_refused_by_every_command(command: str, mlp: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """`--device 1` was ignored by run, bench and compare on a cpu engine, refused by build, and unknown to
    verify; now every command takes it and refuses a device the cpu backend does not have, the same way."""
    argv = {"build": [MLP, "-o", str(tmp_path / "x.engine"), "--backend", "cpu"], "run": [str(mlp), "--seed", "0"],
            "bench": [str(mlp), "--iterations", "1"], "compare": [str(mlp), MLP], "verify": [str(mlp), "--runs", "1"]}
    code, _, err = run_cli(capsys, command, *argv[command], "--device", "1")
    assert code == 2, err
    assert err.startswith(f"reprobuild {command}: error: the cpu backend has one device, 0; got device 1. A device "
                          "index picks a GPU of the cuda backend"), err
    code, _, err = run_cli(capsys, command, *argv[command], "--device", "0")
    assert code == 0, err


def test_refit_with_another_model_names_its_inputs_not_an_unused_option(mlp: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """`refit --model OTHER.onnx` said "--input-shape names 'input', which is not a network input": an option the
    user never gave (the refit passes the engine's input shapes to the parser)."""
    code, _, err = run_cli(capsys, "refit", str(mlp), "--model", f"{EXAMPLES}/small_cnn.onnx", "-o",
                           str(tmp_path / "r.engine"))
    assert code == 8, err
    assert "--input" not in err
    assert ("the new model does not take the engine's inputs (the engine takes input [8, 64] float32; the model "
            "declares image [2, 3, 32, 32] float32): a refit changes weight values only") in err


@pytest.mark.parametrize("option, value, message", [
    ("--tactic-sources", ",", "',' names no tactic source; give one or more of builtin,"),
    ("--tactic-sources", "numpy,bogus", "'numpy,bogus' names unknown source(s) bogus"),
    ("--runs-per-sample", "0", "0 is not a count from 1 to"),
    ("--iterations", "0", "0 is not a count from 1 to"),
    ("--warmup", "-1", "-1 is not a count from 0 to"),
    ("--tie-band", "5", "5 is not between 0 and 1"),
])
def test_build_option_errors_name_the_option(option: str, value: str, message: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """`--tactic-sources ,` exited 6 (no layer had a tactic) after importing the model, and range errors named
    the config's fields (runs_per_sample, tie_band); now argparse refuses them, naming the option, exit code 2."""
    with pytest.raises(SystemExit) as exit_:
        main(["build", MLP, "-o", str(tmp_path / "x.engine"), f"{option}={value}"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"reprobuild build: error: argument {option}: {message}" in err, err
    assert "_" not in err.split("error:")[1], err  # no field name


def test_an_empty_tactic_source_list_is_a_usage_error_in_the_api_too() -> None:
    with pytest.raises(UsageError, match="tactic_sources is empty, so no layer could have a tactic"):
        BuilderConfig(tactic_sources=()).validate()


@pytest.mark.parametrize("command", ["build", "run", "diff"])
def test_an_unknown_option_shows_the_subcommands_usage(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """argparse reported a subcommand's unknown option from the top-level parser, under `reprobuild [-h]
    [--version] COMMAND ...`; now the subcommand reports it with its own usage."""
    with pytest.raises(SystemExit) as exit_:
        main([command, "a", "b", "--bogus"] if command == "diff" else [command, "x", "--bogus"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: reprobuild {command} "), err
    assert err.endswith(f"reprobuild {command}: error: unrecognized arguments: --bogus\n"), err


def test_diff_refuses_an_ignore_pattern_that_names_no_field(mlp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`diff --ignore nonsense.field` was accepted and ignored nothing; now it is refused (exit 2, as diff(1)
    says trouble), listing the fields there are at the deepest level the pattern got right."""
    manifest = str(mlp.with_name("mlp.manifest.json"))
    code, _, err = run_cli(capsys, "diff", str(mlp), manifest, "--ignore", "nonsense.field")
    assert code == 2
    assert ("--ignore 'nonsense.field' names no field of either manifest; the fields and sections are: bindings, "
            "config, engine, environment, evidence, golden, kernel_sources, layer_changes, layers, ") in err, err
    code, _, err = run_cli(capsys, "diff", str(mlp), manifest, "--ignore", "config.timming")
    assert code == 2 and "the fields under config are: backend, " in err and ", timing." in err, err
    for pattern in ("config.timing", "environment", "layers.fc1", "golden", "engine", "layers_added"):
        code, out, err = run_cli(capsys, "diff", str(mlp), manifest, "--ignore", pattern)
        assert code == 0 and f"ignored: {pattern} (" in out, (pattern, err)


def test_max_memory_help_is_one_sentence_in_every_command() -> None:
    """build's --max-memory help read "the most memory the build may need at once (...) may take"."""
    for command in ("build", "run", "verify", "compare", "bench"):
        subparser = _subparser(command)
        (action,) = [a for a in subparser._actions if "--max-memory" in a.option_strings]
        assert action.help is not None and action.help.count(" may ") == 1, (command, action.help)
        assert action.help.startswith(f"the most memory the {'build' if command == 'build' else 'engine'} ("), \
            action.help


def _subparser(command: str) -> argparse.ArgumentParser:
    sub = next(a for a in make_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser: argparse.ArgumentParser = sub.choices[command]
    return parser


def test_onnxruntime_logs_only_errors_unless_verbose(rng: np.random.Generator,
                                                     capfd: pytest.CaptureFixture[str]) -> None:
    """onnxruntime, the reference of `conformance --suite light` and `compare`, printed a coloured warning per
    unused initializer on stderr (some 1,800 lines per conformance run); now only its errors, unless -v."""
    x = rng.standard_normal((2, 3)).astype(np.float32)
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": (2, 3)}, ["y"])
    model.graph.initializer.append(numpy_helper.from_array(np.ones(3, np.float32), "unused"))
    case = Case("light", "relu_with_an_unused_initializer", model.SerializeToString(), {"x": x}, None)
    capfd.readouterr()
    assert run_case(case).result == "pass"
    np.testing.assert_array_equal(onnxruntime_outputs(case.model, {"x": x})["y"], np.maximum(x, 0))
    assert "onnxruntime" not in capfd.readouterr().err
    assert run_case(case, verbose=True).result == "pass"
    assert "Removing initializer 'unused'" in capfd.readouterr().err


def test_version_shows_the_dependencies_without_importing_them() -> None:
    """`--version` built the whole parser (NumPy, onnx, the builder: 2.2 s) and showed no dependency version; now
    it reads them from package metadata and imports none of them."""
    probe = textwrap.dedent("""
        import sys
        from reprobuild.cli.main import main
        try:
            main(["--version"])
        except SystemExit as e:
            code = e.code
        heavy = ("numpy", "onnx", "pydantic", "msgpack", "ml_dtypes", "reprobuild.builder", "reprobuild.cli.build")
        print("exit", code, sorted(m for m in heavy if m in sys.modules))
    """)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()
    assert lines[0] == f"reprobuild {__version__}" and lines[-1] == "exit 0 []", result.stdout
    shown = dict(line.split(None, 1) for line in lines[1:-1])
    assert shown["python"] == platform.python_version()
    for name in ("numpy", "onnx", "pydantic", "msgpack", "ml_dtypes"):
        assert shown[name] == importlib.metadata.version(name), name
    cupy = installed_any(("cupy-cuda13x", "cupy-cuda12x", "cupy-cuda11x", "cupy"))
    assert shown["cupy"] == "not installed" if cupy is None else shown["cupy"].startswith(cupy[1])

"""One input convention, one seed, and the other command-line findings of issue 11: --input/--inputs/--seed in
every command that runs an engine, build --replay of an engine file, files refused before any work, shape advice
that can be followed, and --json on build, run and inspect."""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import reprobuild.cli.compare as cli_compare
import reprobuild.cli.verify as cli_verify
from reprobuild import __version__
from reprobuild.cli.common import engine_inputs
from reprobuild.cli.main import COMMANDS, main, make_parser
from reprobuild.cli.run import RANDOM_INPUTS_REMOVED_IN
from reprobuild.core.digest import array_digest, sha256_hex
from reprobuild.engine import Runtime
from reprobuild.engine.golden import golden_inputs
from tests.helpers import EXAMPLES, make_model, run_cli

MLP = f"{EXAMPLES}/mlp.onnx"


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mlp.engine (input 'input' [8, 64]) and its manifest, built once with --seed 5 (the tests only read them)."""
    engine = tmp_path_factory.mktemp("mlp") / "mlp.engine"
    assert main(["build", MLP, "-o", str(engine), "--backend", "cpu", "--seed", "5", "-q"]) == 0
    return engine


@pytest.fixture(scope="module")
def add(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An engine of two inputs, z = x + y with x, y [2, 3], and its model."""
    directory = tmp_path_factory.mktemp("add")
    model = directory / "add.onnx"
    onnx.save(make_model([helper.make_node("Add", ["x", "y"], ["z"])], {"x": (2, 3), "y": (2, 3)}, ["z"]), model)
    engine = directory / "add.engine"
    assert main(["build", str(model), "-o", str(engine), "--backend", "cpu", "-q"]) == 0
    return engine, model


def _bindings(engine: Path) -> Any:
    return Runtime().deserialize_engine(engine.read_bytes()).inputs


def _run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    code, out, err = run_cli(capsys, "run", *argv, "--json")
    assert code == 0, err
    return dict(json.loads(out))


# --- one input convention ----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "verify", "compare"])
def test_every_command_that_runs_an_engine_takes_input_inputs_and_seed(command: str) -> None:
    """`compare --input` did not exist (and was read as --inputs by prefix matching); now run, verify and compare
    parse the same three options the same way."""
    extra = [MLP] if command == "compare" else []
    args = make_parser().parse_args([command, "e.engine", *extra, "--input", "a=x.npy", "--input", "b=y.npy",
                                     "--inputs", "dir", "--seed", "7"])
    assert args.input == [("a", "x.npy"), ("b", "y.npy")] and args.inputs == "dir" and args.seed == 7


def test_compare_reads_input_files(mlp: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.random.default_rng(1).standard_normal((8, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    seen: dict[str, np.ndarray] = {}
    real = cli_compare.onnxruntime_outputs

    def spy(model_bytes: bytes, inputs: dict[str, np.ndarray], verbose: bool = False) -> Any:
        seen.update(inputs)
        return real(model_bytes, inputs, verbose)

    monkeypatch.setattr(cli_compare, "onnxruntime_outputs", spy)
    code, out, err = run_cli(capsys, "compare", str(mlp), MLP, "--input", f"input={tmp_path / 'x.npy'}")
    assert code == 0, err
    assert np.array_equal(seen["input"], x) and f"inputs from {tmp_path / 'x.npy'}" in out


def test_input_wins_over_inputs_and_seed_fills_the_rest(add: tuple[Path, Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    engine, _ = add
    directory = tmp_path / "dir"
    directory.mkdir()
    in_dir, explicit = np.full((2, 3), 1.0, np.float32), np.full((2, 3), 2.0, np.float32)
    np.save(directory / "x.npy", in_dir)
    np.save(tmp_path / "x2.npy", explicit)
    np.save(directory / "y.npy", in_dir)
    doc = _run_json(capsys, str(engine), "--inputs", str(directory), "--input", f"x={tmp_path / 'x2.npy'}")
    assert doc["inputs"]["x"]["sha256"] == array_digest(explicit)
    assert doc["inputs"]["y"]["sha256"] == array_digest(in_dir)
    assert doc["inputs_from"] == f"x from {tmp_path / 'x2.npy'}; y from {directory}"
    (directory / "y.npy").unlink()  # y now comes from the seed, with the values the seed gives it alone
    doc = _run_json(capsys, str(engine), "--inputs", str(directory), "--seed", "3")
    drawn = golden_inputs(_bindings(engine), 3)
    assert doc["inputs"]["x"]["sha256"] == array_digest(in_dir)
    assert doc["inputs"]["y"]["sha256"] == array_digest(drawn["y"])
    assert doc["inputs_from"] == f"x from {directory}; y seeded standard normal (seed 3)"


def test_inputs_not_given_are_an_input_error_saying_how_to_give_them(add: tuple[Path, Path], tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    engine, _ = add
    np.save(tmp_path / "x.npy", np.zeros((2, 3), np.float32))
    code, _, err = run_cli(capsys, "run", str(engine), "--input", f"x={tmp_path / 'x.npy'}")
    assert code == 7, err
    assert "no value for input(s) ['y']" in err and "--seed SEED" in err and "--inputs DIR" in err
    code, _, err = run_cli(capsys, "verify", str(engine), "--inputs", str(tmp_path), "--runs", "1")
    assert code == 7 and "--inputs " + str(tmp_path) + " holds none of y.npy" in err, err


def test_an_unknown_input_name_lists_the_engine_inputs(add: tuple[Path, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    engine, model = add
    np.save(tmp_path / "x.npy", np.zeros((2, 3), np.float32))
    for command in (["run", str(engine)], ["verify", str(engine)], ["compare", str(engine), str(model)]):
        code, _, err = run_cli(capsys, *command, "--input", f"X={tmp_path / 'x.npy'}")
        assert code == 7, err
        assert "the engine has no input 'X'; its inputs are: x [2, 3] float32, y [2, 3] float32" in err


def test_an_input_named_twice_is_a_usage_error(add: tuple[Path, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    engine, _ = add
    np.save(tmp_path / "x.npy", np.zeros((2, 3), np.float32))
    code, _, err = run_cli(capsys, "run", str(engine), "--seed", "0", "--input", f"x={tmp_path / 'x.npy'}",
                           "--input", f"x={tmp_path / 'x.npy'}")
    assert code == 2 and "--input names 'x' twice" in err


def test_a_text_file_as_input_is_not_called_pickled(mlp: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """numpy takes any non-.npy file for a pickle; the message said it held Python objects."""
    text = tmp_path / "x.npy"
    text.write_text("1 2 3\n")
    code, _, err = run_cli(capsys, "run", str(mlp), "--input", f"input={text}")
    assert code == 7, err
    assert "is not a .npy file" in err and "numpy.save" in err
    assert "pickle" not in err and "Python objects" not in err and "unsafe" not in err


def _npy(header: str, body: bytes = b"") -> bytes:
    """A version 1.0 .npy file with this header dict (padded as numpy pads it) and data."""
    text = header.encode("latin1")
    pad = 64 - (10 + len(text) + 1) % 64
    return b"\x93NUMPY\x01\x00" + (len(text) + pad + 1).to_bytes(2, "little") + text + b" " * pad + b"\n" + body


@pytest.mark.parametrize("header, body, message", [
    ("{'descr': '<f4', 'fortran_order': False, 'shape': (2000000, 1000000), }", b"\0" * 2048,
     r"has shape \[2000000, 1000000\]; the engine was built for \[2, 3\]"),
    ("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", b"\0" * 48,
     r"has dtype float64; the engine expects float32 \(convert with array\.astype\(numpy\.float32\)"),
    ("{'descr': '|O', 'fortran_order': False, 'shape': (2, 3), }", b"\0" * 48,
     r"holds Python objects \(an object array\), which reprobuild never loads"),
    ("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2, 3), }", b"\0" * 24,
     r"its dtype .* is not a number or bool type"),
    ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", b"\0" * 20,
     r"holds 20 bytes of data, but its header says shape \[2, 3\] float32, which is 24 bytes"),
    ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", b"\0" * 30,
     r"holds 30 bytes of data, but its header says shape \[2, 3\] float32"),
    ("{'descr': '<f4', 'shape': (2, 3), }", b"\0" * 24, r"has no valid \.npy header"),
])
def test_an_npy_header_is_checked_against_the_input_before_anything_is_allocated(
        add: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], header: str, body: bytes,
        message: str) -> None:
    """A 2 KB file whose header claims shape (2000000, 1000000) was an untyped MemoryError (exit 1): numpy
    allocated the array before reading its data."""
    engine, _ = add
    path = tmp_path / "x.npy"
    path.write_bytes(_npy(header, body))
    for command in ("run", "verify"):
        code, _, err = run_cli(capsys, command, str(engine), "--seed", "0", "--input", f"x={path}")
        assert code == 7, err
        assert re.search(message, err), err


def test_a_file_larger_than_its_input_is_refused_before_it_is_read(add: tuple[Path, Path], tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    engine, _ = add
    np.save(tmp_path / "x.npy", np.zeros((300, 300), np.float32))
    code, _, err = run_cli(capsys, "run", str(engine), "--seed", "0", "--input", f"x={tmp_path / 'x.npy'}")
    assert code == 7, err
    assert "is larger than an array of shape [2, 3] float32, which the engine takes" in err


def test_fortran_order_and_big_endian_npy_files_are_read_as_their_values(add: tuple[Path, Path], tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    engine, _ = add
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.save(tmp_path / "x.npy", np.asfortranarray(x))
    np.save(tmp_path / "y.npy", x.astype(">f4"))
    doc = _run_json(capsys, str(engine), "--input", f"x={tmp_path / 'x.npy'}", "--input", f"y={tmp_path / 'y.npy'}")
    assert doc["inputs"]["x"]["sha256"] == array_digest(x)
    assert doc["inputs"]["y"]["sha256"] == array_digest(x)


# --- one seed meaning ------------------------------------------------------------------------------------


def test_one_seed_gives_the_same_inputs_in_every_command(mlp: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed 5 in run, verify, compare, the golden record of `build --seed 5` and the Python API: one array."""
    api = golden_inputs(_bindings(mlp), 5)["input"]
    manifest = json.loads(mlp.with_name("mlp.manifest.json").read_text())
    assert manifest["pinned"]["golden"]["seed"] == 5
    assert manifest["pinned"]["golden"]["inputs"] == [{"name": "input", "sha256": array_digest(api)}]
    assert _run_json(capsys, str(mlp), "--seed", "5")["inputs"]["input"]["sha256"] == array_digest(api)
    seen: dict[str, list[np.ndarray]] = {"verify": [], "compare": []}
    real_verify, real_ort = cli_verify.verify, cli_compare.onnxruntime_outputs
    monkeypatch.setattr(cli_verify, "verify", lambda engine, inputs, *a: (seen["verify"].append(inputs["input"]),
                                                                          real_verify(engine, inputs, *a))[1])
    monkeypatch.setattr(cli_compare, "onnxruntime_outputs",
                        lambda model, inputs, *a: (seen["compare"].append(inputs["input"]),
                                                   real_ort(model, inputs, *a))[1])
    assert run_cli(capsys, "verify", str(mlp), "--seed", "5", "--runs", "1", "--contexts", "1")[0] == 0
    assert run_cli(capsys, "compare", str(mlp), MLP, "--seed", "5")[0] == 0
    assert [a.tobytes() for a in (*seen["verify"], *seen["compare"])] == [api.tobytes()] * 2


def test_random_inputs_is_a_deprecated_spelling_of_seed(mlp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = _run_json(capsys, str(mlp), "--random-inputs", "5")
    assert old == _run_json(capsys, str(mlp), "--seed", "5")
    code, _, err = run_cli(capsys, "run", str(mlp), "--random-inputs", "5", "-q")
    assert code == 0
    assert f"--random-inputs is deprecated and will be removed in reprobuild {RANDOM_INPUTS_REMOVED_IN}" in err


def test_random_inputs_is_removed_before_its_removal_version_ships() -> None:
    """Fails on the release that was promised to drop it: then delete --random-inputs and this test."""
    version = tuple(int(part) for part in __version__.split(".")[:3])
    removal = tuple(int(part) for part in RANDOM_INPUTS_REMOVED_IN.split("."))
    assert version < removal, f"run --random-inputs was to be removed in {RANDOM_INPUTS_REMOVED_IN}; remove it"


def test_engine_inputs_is_the_api_bench_shares(mlp: Path) -> None:
    """engine_inputs on a parsed command line gives golden_inputs' arrays for a seed, and a phrase."""
    parser = argparse.ArgumentParser()
    from reprobuild.cli.common import add_engine_input_options

    add_engine_input_options(parser, default_seed=0)
    bindings = _bindings(mlp)
    inputs, label = engine_inputs(parser.parse_args([]), bindings)
    assert label == "seeded standard normal (seed 0)"
    assert inputs["input"].tobytes() == golden_inputs(bindings, 0)["input"].tobytes()


# --- build --replay ENGINE, and files refused before any work ----------------------------------------------


def test_replay_from_an_engine_file_gives_identical_engine_bytes(mlp: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    replayed = tmp_path / "replayed.engine"
    code, out, err = run_cli(capsys, "build", MLP, "-o", str(replayed), "--replay", str(mlp))
    assert code == 0, err
    assert replayed.read_bytes() == mlp.read_bytes()
    assert "0 tactic timings" in out and "identical to the engine digest the manifest records" in out


@pytest.mark.parametrize("option", ["--replay", "--against"])
def test_a_model_given_for_an_engine_or_manifest_is_refused_before_any_work(
        option: str, mlp: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_run(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a verification run started")

    monkeypatch.setattr(cli_verify, "verify", no_run)
    monkeypatch.setattr(cli_verify, "Runtime", no_run)  # refused before the engine is even loaded
    monkeypatch.setattr("reprobuild.cli.build.network_from_onnx_path", no_run)
    out = tmp_path / "x.engine"
    argv = (["build", MLP, "-o", str(out), "--replay", MLP] if option == "--replay" else
            ["verify", str(mlp), "--against", MLP])
    code, stdout, err = run_cli(capsys, *argv)
    assert code == 2, err
    assert f"{option} {MLP!r} is neither an engine file nor a manifest (it looks like an ONNX model)" in err
    assert "Traceback" not in err and stdout == "" and not out.exists()


def test_a_text_file_for_against_is_refused_without_guessing_onnx(mlp: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a manifest\n")
    code, _, err = run_cli(capsys, "verify", str(mlp), "--against", str(notes))
    assert code == 2 and "is neither an engine file nor a manifest:" in err and "ONNX" not in err, err


def test_outputs_that_would_overwrite_or_pass_for_a_model_are_refused(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "mlp.onnx"
    shutil.copy(MLP, model)
    before = model.read_bytes()
    engine = str(tmp_path / "mlp.engine")
    cases = {
        ("-o", str(tmp_path / "out.onnx")): "has the .onnx extension of a model",
        ("-o", str(model)): "is the model file itself",
        ("-o", engine, "--manifest", engine): "is the engine path too",
        ("-o", engine, "--manifest", str(model)): "is the model file itself",
        ("-o", engine, "--manifest", str(tmp_path / "m.ONNX")): "has the .onnx extension",
    }
    for options, message in cases.items():
        code, out, err = run_cli(capsys, "build", str(model), *options)
        assert code == 2 and message in err and "tactic selection" not in err and out == "", (options, err)
    assert model.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.onnx"]


# --- shapes: advice that can be followed -------------------------------------------------------------------


def test_a_wrong_shape_gets_a_concrete_input_shape_not_a_bare_option(mlp: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "x.npy", np.zeros((3, 64), np.float32))
    code, _, err = run_cli(capsys, "run", str(mlp), "--input", f"input={tmp_path / 'x.npy'}")
    assert code == 7, err
    assert "has shape [3, 64]; the engine was built for [8, 64]" in err
    # mlp.onnx declares [8, 64]: the engine records it, so the advice is the static case's, with the way out
    assert "declares axis 0 of 'input' static (8 at axis 0)" in err and "no rebuild changes it" in err
    assert "export the model with a dynamic dimension there and rebuild with --input-shape input=3x64" in err
    assert "(rebuild with --input-shape to change it)" not in err


def test_the_dynamic_dimension_error_suggests_an_input_shape_that_builds(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H", 4])])
    model = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    engine = str(tmp_path / "dyn.engine")
    code, _, err = run_cli(capsys, "build", str(model), "-o", engine)
    assert code == 3, err
    assert "2 dynamic dimensions ('N' at axis 0, 'H' at axis 2" in err and "=Nx" not in err
    suggested = re.search(r"--input-shape (x=\S+)", err)
    assert suggested is not None and suggested.group(1) == "x=1x3x1x4", err
    code, _, err = run_cli(capsys, "build", str(model), "-o", engine, "--input-shape", suggested.group(1), "-q")
    assert code == 0, err


# --- --json ------------------------------------------------------------------------------------------------


def test_build_json_describes_the_files_and_every_decision(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    engine = tmp_path / "mlp.engine"
    code, out, err = run_cli(capsys, "build", MLP, "-o", str(engine), "--backend", "cpu", "--json")
    assert code == 0, err
    assert "tactic selection" in err  # progress stays on stderr
    doc = json.loads(out)
    manifest_path = tmp_path / "mlp.manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert doc["engine"] == {"path": str(engine), "sha256": hashlib.sha256(engine.read_bytes()).hexdigest(),
                             "size_bytes": engine.stat().st_size}
    assert doc["manifest"] == {"path": str(manifest_path),
                               "sha256": hashlib.sha256(manifest_path.read_bytes()).hexdigest()}
    assert [(layer["name"], layer["op"], layer["tactic"]["name"]) for layer in doc["layers"]] == [
        (layer["name"], layer["op"], layer["tactic"]["name"]) for layer in manifest["pinned"]["layers"]]
    assert all(isinstance(layer["median_ns"], int) and layer["eligible"] >= 1 for layer in doc["layers"])
    assert doc["timings"]["tactics_timed"] == manifest["evidence"]["tactics_timed"] > 0
    assert doc["build_seconds"] == manifest["evidence"]["wall_seconds"]
    assert doc["mode"] == "timed" and doc["replay"] is None and doc["warnings"] == []
    assert out == json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"  # canonical


def test_build_json_lists_the_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "nan.onnx"
    onnx.save(make_model([helper.make_node("Add", ["x", "w"], ["y"])], {"x": (1, 2)}, ["y"],
                         {"w": np.array([[np.nan, 1.0]], np.float32)}), model)
    code, out, err = run_cli(capsys, "build", str(model), "-o", str(tmp_path / "nan.engine"), "--json", "-q")
    assert code == 0, err
    warnings = json.loads(out)["warnings"]
    assert len(warnings) == 1 and "'w'" in warnings[0] and "NaN" in warnings[0]


def test_run_json_has_each_output_and_writes_non_finite_stats_as_strings(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "log.onnx"
    onnx.save(make_model([helper.make_node("Log", ["x"], ["y"])], {"x": (4,)}, ["y"]), model)
    engine = tmp_path / "log.engine"
    assert main(["build", str(model), "-o", str(engine), "--backend", "cpu", "-q"]) == 0
    capsys.readouterr()
    np.save(tmp_path / "x.npy", np.array([-1.0, 0.0, 1.0, np.e], np.float32))
    doc = _run_json(capsys, str(engine), "--input", f"x={tmp_path / 'x.npy'}", "--output-dir", str(tmp_path / "out"))
    saved = np.load(tmp_path / "out" / "y.npy")
    y = doc["outputs"]["y"]
    assert y["shape"] == [4] and y["dtype"] == "float32" and y["sha256"] == array_digest(saved)
    assert (y["nan"], y["neginf"], y["posinf"]) == (1, 1, 0)
    assert y["min"] == y["max"] == y["mean"] == "nan"  # NaN is no JSON number
    assert doc["files"] == {"y": str(tmp_path / "out" / "y.npy")}
    assert doc["engine"]["sha256"] == sha256_hex(engine.read_bytes())


def test_run_json_figures_are_the_outputs(mlp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = _run_json(capsys, str(mlp), "--seed", "1")
    engine = Runtime().deserialize_engine(mlp.read_bytes())
    probs = engine.create_execution_context().execute(golden_inputs(engine.inputs, 1))["probs"]
    figures = doc["outputs"]["probs"]
    assert figures["sha256"] == array_digest(probs)
    assert figures["min"] == float(probs.astype(np.float64).min())
    assert figures["max"] == float(probs.astype(np.float64).max())
    assert (figures["nan"], figures["posinf"], figures["neginf"]) == (0, 0, 0)


def test_inspect_json_is_what_the_text_shows(mlp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "inspect", str(mlp), "--json")
    assert code == 0, err
    doc = json.loads(out)
    manifest = json.loads(mlp.with_name("mlp.manifest.json").read_text())
    assert doc["engine"]["path"] == str(mlp)
    assert doc["engine"]["sha256"] == sha256_hex(mlp.read_bytes()) == manifest["engine"]["sha256"]
    assert doc["pinned"] == manifest["pinned"]
    assert out == json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# --- help ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser = make_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    for action in sub._actions:
        assert action.help, f"{command} {'/'.join(action.option_strings) or action.dest} has no help text"
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert capsys.readouterr().out.startswith(f"usage: reprobuild {command}")

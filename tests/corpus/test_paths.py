"""Paths that are not files (issue 10): a directory, a FIFO or ``/dev/zero`` given as the engine, the manifest,
the timing cache or an input is refused before a byte is read (a FIFO would block, ``/dev/zero`` read forever),
with exit code 2 and no traceback. (The model's own cases are in ``test_onnx.py``.)

Outputs (issue 20): a symbolic link, a FIFO, a directory or a device given as an output is refused before any
work and left as it was; a missing directory is named and not created; ``-`` is standard output where one
document is written and refused where files are."""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from reprobuild.cli.main import main
from reprobuild.core.errors import UsageError
from reprobuild.core.fileio import check_output_path, read_bounded
from tests.helpers import EXAMPLES

MLP = f"{EXAMPLES}/mlp.onnx"


def _directory(tmp: Path) -> Path:
    path = tmp / "a_directory"
    path.mkdir()
    return path


def _fifo(tmp: Path) -> Path:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    path = tmp / "a_fifo"
    os.mkfifo(path)
    return path


def _dev_zero(tmp: Path) -> Path:
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero on this platform")
    return Path("/dev/zero")


NOT_FILES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "directory": (_directory, r"is a directory; give a file"),
    "fifo": (_fifo, r"is not a regular file"),
    "dev_zero": (_dev_zero, r"is not a regular file"),
}

#: How each file is given to the command line; PATH is the path under test, ENGINE a valid engine.
COMMANDS = {
    "engine (inspect)": ["inspect", "PATH"],
    "engine (run)": ["run", "PATH", "--seed", "0"],
    "engine (verify)": ["verify", "PATH", "--runs", "2"],
    "manifest (build --replay)": ["build", MLP, "--replay", "PATH", "-o", "OUT"],
    "manifest (verify --against)": ["verify", "ENGINE", "--against", "PATH", "--runs", "2"],
    "timing cache (build --timing-cache)": ["build", MLP, "--timing-cache", "PATH", "-o", "OUT"],
    "input (run --input)": ["run", "ENGINE", "--input", "input=PATH"],
}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("engine") / "mlp.engine"
    assert main(["build", MLP, "-o", str(path), "--backend", "cpu", "-q"]) == 0
    return path


@pytest.mark.parametrize("kind", sorted(NOT_FILES))
def test_read_bounded_refuses(tmp_path: Path, kind: str) -> None:
    make, message = NOT_FILES[kind]
    with pytest.raises(UsageError, match=message):
        read_bounded(make(tmp_path), 1024, "engine")


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("kind", sorted(NOT_FILES))
def test_the_cli_refuses(tmp_path: Path, engine: Path, capsys: pytest.CaptureFixture[str], kind: str,
                         command: str) -> None:
    make, _ = NOT_FILES[kind]
    path = make(tmp_path)
    out = tmp_path / "out.engine"
    argv = [str(path) if a == "PATH" else str(engine) if a == "ENGINE" else str(out) if a == "OUT" else
            a.replace("PATH", str(path)) for a in COMMANDS[command]]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert not out.exists()


def test_an_object_array_is_refused_without_advice_to_unpickle(tmp_path: Path, engine: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    code = main(["run", str(engine), "--input", f"input={path}"])
    err = capsys.readouterr().err
    assert code == 7, err
    assert "Python objects" in err and "unsafe" not in err and "allow_pickle" not in err, err


# --- outputs (issue 20, finding 6) -------------------------------------------------------------------------------

#: Every command that writes a file, with OUT the output path under test and ENGINE a valid engine.
WRITERS = {
    "build -o": ["build", MLP, "-o", "OUT", "--backend", "cpu"],
    "build --manifest": ["build", MLP, "-o", "DIR/e.engine", "--manifest", "OUT", "--backend", "cpu"],
    "build --timing-cache": ["build", MLP, "-o", "DIR/e.engine", "--timing-cache", "OUT", "--backend", "cpu"],
    "refit -o": ["refit", "ENGINE", "--model", MLP, "-o", "OUT"],
    "refit --manifest": ["refit", "ENGINE", "--model", MLP, "-o", "DIR/e.engine", "--manifest", "OUT"],
    "verify --report": ["verify", "ENGINE", "--runs", "2", "--report", "OUT"],
    "compare --report": ["compare", "ENGINE", MLP, "--report", "OUT"],
    "attest -o": ["attest", "ENGINE", "-o", "OUT"],
    "conformance --output": ["conformance", "--suite", "node", "--case", "test_relu", "--output", "OUT"],
}


def _argv(command: str, out: Path | str, engine: Path, directory: Path) -> list[str]:
    return [str(out) if a == "OUT" else str(engine) if a == "ENGINE" else a.replace("DIR", str(directory))
            for a in WRITERS[command]]


def _symlink(tmp: Path) -> Path:
    (tmp / "kept.json").write_text("the link's target\n")
    link = tmp / "link.json"
    link.symlink_to(tmp / "kept.json")
    return link


NOT_REGULAR: dict[str, tuple[Callable[[Path], Path], str, Callable[[Path], bool]]] = {
    "symlink": (_symlink, r"is a symbolic link \(to '.*kept\.json'\)",
                lambda p: p.is_symlink() and (p.parent / "kept.json").read_text() == "the link's target\n"),
    "fifo": (_fifo, r"is a FIFO, not a regular file", lambda p: stat.S_ISFIFO(os.lstat(p).st_mode)),
    "directory": (_directory, r"is a directory; give a file path", lambda p: p.is_dir() and not any(p.iterdir())),
}


@pytest.mark.parametrize("command", sorted(WRITERS))
@pytest.mark.parametrize("kind", sorted(NOT_REGULAR))
def test_an_output_that_is_not_a_regular_file_is_refused_and_kept(tmp_path: Path, engine: Path, kind: str,
                                                                 command: str, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    make, message, unchanged = NOT_REGULAR[kind]
    path = make(tmp_path)
    monkeypatch.setattr("reprobuild.cli.build.network_from_onnx_path", _no_work)
    code = main(_argv(command, path, engine, tmp_path))
    err = capsys.readouterr().err
    assert code == 2, err
    assert re.search(message, err) and "Traceback" not in err, err
    assert unchanged(path), f"{kind} {path} was changed"
    assert not (tmp_path / "e.engine").exists() and _temps(tmp_path) == []


def _no_work(*args: object, **kwargs: object) -> None:
    raise AssertionError("the model was parsed: the output path was not checked before the work")


def _temps(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".reprobuild-"))


def test_a_device_is_refused_without_writing() -> None:
    if not os.path.exists("/dev/null"):
        pytest.skip("no /dev/null on this platform")
    before = os.stat("/dev/null")
    for stdout in (False, True):
        with pytest.raises(UsageError, match=r"'/dev/null' is a character device, not a regular file; .*would "
                                             r"replace the character device itself"):
            check_output_path("/dev/null", "--output", stdout=stdout)
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_ino == before.st_ino


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="no /proc on this platform")
def test_an_output_in_proc_is_refused_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("reprobuild.cli.build.network_from_onnx_path", _no_work)
    started = time.perf_counter()
    code = main(["build", MLP, "-o", "/proc/x.engine", "--backend", "cpu"])
    seconds = time.perf_counter() - started
    err = capsys.readouterr().err
    assert code == 2, err
    assert "--output (the engine) '/proc/x.engine': no file can be created in the directory '/proc'" in err, err
    assert "tactic selection" not in err and seconds < 2, (seconds, err)
    assert not os.path.exists("/proc/x.engine")


@pytest.mark.parametrize("command", sorted(WRITERS))
def test_a_missing_directory_is_named_and_not_created(tmp_path: Path, engine: Path, command: str,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("reprobuild.cli.build.network_from_onnx_path", _no_work)
    missing = tmp_path / "missing" / "deeper"
    code = main(_argv(command, missing / "out.json", engine, tmp_path))
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"the directory '{missing}' does not exist, and reprobuild does not create it" in err, err
    assert not (tmp_path / "missing").exists()


def test_run_output_dir_is_created_but_never_its_parents(tmp_path: Path, engine: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", str(engine), "--seed", "0", "--output-dir", str(tmp_path / "missing" / "out")])
    err = capsys.readouterr().err
    assert code == 2 and f"the directory '{tmp_path / 'missing'}' does not exist" in err, err
    assert not (tmp_path / "missing").exists()
    assert main(["run", str(engine), "--seed", "0", "--output-dir", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "probs.npy").is_file()

    (tmp_path / "kept.npy").write_bytes(b"not replaced")
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "probs.npy").symlink_to(tmp_path / "kept.npy")
    code = main(["run", str(engine), "--seed", "0", "--output-dir", str(tmp_path / "links")])
    err = capsys.readouterr().err
    assert code == 2 and "--output-dir: the output file" in err and "is a symbolic link" in err, err
    assert (tmp_path / "links" / "probs.npy").is_symlink() and (tmp_path / "kept.npy").read_bytes() == b"not replaced"
    code = main(["run", str(engine), "--seed", "0", "--output-dir", "-"])
    assert code == 2 and "not standard output" in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root may create files in a read-only directory (the /proc test covers root)")
def test_an_unwritable_directory_is_refused_up_front(tmp_path: Path, engine: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        code = main(["attest", str(engine), "-o", str(locked / "s.json")])
    finally:
        locked.chmod(0o700)
    err = capsys.readouterr().err
    assert code == 2 and f"no file can be created in the directory '{locked}'" in err, err


@pytest.mark.parametrize("argv", [["verify", "ENGINE", "--runs", "2", "--report", "-"],
                                  ["compare", "ENGINE", MLP, "--report", "-"],
                                  ["attest", "ENGINE", "-o", "-"]])
def test_dash_means_standard_output_for_one_document(argv: list[str], tmp_path: Path, engine: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    code = main([str(engine) if a == "ENGINE" else a for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    document = json.loads(out)  # the document alone: the table went to stderr
    assert isinstance(document, dict) and document
    assert not (tmp_path / "-").exists() and _temps(tmp_path) == []
    if argv[0] != "attest":
        assert "verdict" in err or "tolerance" in err, err


@pytest.mark.parametrize("argv", [["build", MLP, "-o", "-", "--backend", "cpu"],
                                  ["build", MLP, "-o", "e.engine", "--manifest", "-", "--backend", "cpu"],
                                  ["refit", "ENGINE", "--model", MLP, "-o", "-"]])
def test_dash_is_refused_where_files_are_written(argv: list[str], tmp_path: Path, engine: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("reprobuild.cli.build.network_from_onnx_path", _no_work)
    code = main([str(engine) if a == "ENGINE" else a for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and "'-': this option writes a file, not standard output" in err, err
    assert sorted(os.listdir(tmp_path)) == []

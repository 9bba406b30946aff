"""Paths that are not files (issue 10): a directory, a FIFO or ``/dev/zero`` given as the engine, the manifest,
the timing cache or an input is refused before a byte is read (a FIFO would block, ``/dev/zero`` read forever),
with exit code 2 and no traceback. (The model's own cases are in ``test_onnx.py``.)"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from reprobuild.cli.main import main
from reprobuild.errors import UsageError
from reprobuild.fileio import read_bounded
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

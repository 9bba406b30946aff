"""Writes (issue 20, findings 7 and 8): an engine and its manifest stay a pair when a signal lands between their
renames or two builds write the same outputs at once, the CLI says truly what was written, and a full disk is a
typed error (exit 13) that leaves the old files and no temp file.

Signals and interleavings are made deterministic by wrapping ``os.replace``: the signal is sent from inside the
first rename, and two writers are held at chosen points with events (with timeouts, so that a writer the lock
holds back does not wait forever)."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import reprobuild.core.fileio as fileio
from reprobuild.cli.main import main, make_parser
from reprobuild.core.errors import StorageError
from reprobuild.core.fileio import atomic_write_all, write_output
from tests.helpers import EXAMPLES, cli_env, run_cli

MLP = f"{EXAMPLES}/mlp.onnx"
POSIX = pytest.mark.skipif(os.name != "posix", reason="POSIX signals and flock")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _is_pair(engine: Path, manifest: Path) -> bool:
    return bool(json.loads(manifest.read_text())["engine"]["sha256"] == _sha256(engine))


def _temps(directory: Path) -> list[str]:
    """Temp and lock files (both hidden) left in ``directory``."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


@pytest.fixture
def old_pair(tmp_path: Path) -> tuple[Path, Path]:
    """m.engine and m.manifest.json of a build with seed 1: the pair a later build replaces."""
    engine, manifest = tmp_path / "m.engine", tmp_path / "m.manifest.json"
    assert main(["build", MLP, "-o", str(engine), "--backend", "cpu", "--seed", "1", "-q"]) == 0
    assert _is_pair(engine, manifest)
    return engine, manifest


# --- a signal between the two renames ------------------------------------------------------------------------------

@POSIX
@pytest.mark.parametrize(("signum", "code", "said"), [(signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                                      (signal.SIGINT, 130, "interrupted")])
def test_a_signal_between_the_renames_waits_for_the_pair(signum: int, code: int, said: str,
                                                          old_pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    if signal.getsignal(signum) == signal.SIG_IGN:  # e.g. SIGINT in a background job of a non-interactive shell
        pytest.skip(f"{signal.Signals(signum).name} is ignored in this process, so the build rightly goes on")
    engine, manifest = old_pair
    old_manifest = manifest.read_bytes()
    capsys.readouterr()
    real_replace = os.replace
    renamed: list[str] = []

    def replace_then_signal(src: Any, dst: Any) -> None:
        real_replace(src, dst)
        renamed.append(os.fspath(dst))
        if len(renamed) == 1:  # the engine is in place, the manifest not yet
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(os, "replace", replace_then_signal)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    got, out, err = run_cli(capsys, "build", MLP, "-o", str(engine), "--backend", "cpu", "--seed", "2", "-q")
    assert got == code and out == "", err
    assert renamed == [str(engine), str(manifest)]
    assert _is_pair(engine, manifest) and manifest.read_bytes() != old_manifest  # the new pair, complete
    assert err == f"reprobuild build: {said} after writing '{engine}', '{manifest}' in full; no partial file is left\n"
    assert "partial files were removed" not in err and _temps(engine.parent) == []
    assert {s: signal.getsignal(s) for s in handlers} == handlers  # the handlers are back


PAUSE_HARNESS = """
import os, sys, time
from reprobuild.cli.main import main
replace = os.replace
def replace_and_pause(src, dst):  # the engine is renamed; the manifest waits for the signal
    replace(src, dst)
    if dst.endswith(".engine"):
        print("RENAMED", file=sys.stderr, flush=True)
        time.sleep(3)
os.replace = replace_and_pause
sys.exit(main(sys.argv[1:]))
"""


@POSIX
def test_sigterm_from_another_process_between_the_renames_waits_for_the_pair(old_pair: tuple[Path, Path]) -> None:
    engine, manifest = old_pair
    process = subprocess.Popen([sys.executable, "-c", PAUSE_HARNESS, "build", MLP, "-o", str(engine), "--backend",
                                "cpu", "--seed", "2", "-q"], env=cli_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        lines = []
        while not lines or lines[-1] not in ("RENAMED\n", ""):
            lines.append(process.stderr.readline())
        assert lines[-1] == "RENAMED\n", "".join(lines)
        process.send_signal(signal.SIGTERM)  # to the process: any of its threads may take it
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 143, err
    assert err == f"reprobuild build: terminated (SIGTERM) after writing '{engine}', '{manifest}' in full; no " \
                  "partial file is left\n"
    assert _is_pair(engine, manifest) and _temps(engine.parent) == []


def test_a_signal_before_any_rename_leaves_the_old_pair_and_says_so(old_pair: tuple[Path, Path],
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    engine, manifest = old_pair
    before = engine.read_bytes(), manifest.read_bytes()
    capsys.readouterr()

    def interrupted(fd: int, tmp: str, data: bytes) -> None:
        os.close(fd)
        raise KeyboardInterrupt

    monkeypatch.setattr(fileio, "_fill", interrupted)
    got, _, err = run_cli(capsys, "build", MLP, "-o", str(engine), "--backend", "cpu", "--seed", "2", "-q")
    assert got == 130 and err == "reprobuild build: interrupted\n", err
    assert (engine.read_bytes(), manifest.read_bytes()) == before and _temps(engine.parent) == []


# --- two writers of the same outputs ------------------------------------------------------------------------------

def _interleaving(monkeypatch: pytest.MonkeyPatch, wait: float) -> None:
    """Wrap os.replace so that, unless a lock keeps them apart, thread A renames its engine, then B renames both of
    its files, then A renames its manifest: A's manifest beside B's engine."""
    real_replace = os.replace
    a_renamed_engine, b_done = threading.Event(), threading.Event()
    counts: dict[str, int] = {}

    def replace(src: Any, dst: Any) -> None:
        who = threading.current_thread().name
        counts[who] = counts.get(who, 0) + 1
        if who == "B" and counts[who] == 1:
            a_renamed_engine.wait(wait)
        real_replace(src, dst)
        if who == "A" and counts[who] == 1:
            a_renamed_engine.set()
            b_done.wait(wait)
        if who == "B" and counts[who] == 2:
            b_done.set()

    monkeypatch.setattr(os, "replace", replace)


def _in_threads(jobs: dict[str, Callable[[], object]]) -> None:
    errors: list[BaseException] = []

    def guarded(job: Callable[[], object]) -> None:
        try:
            job()
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(job,), name=name) for name, job in jobs.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors


@POSIX
def test_two_writers_of_one_pair_take_turns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine, manifest = tmp_path / "e.bin", tmp_path / "m.json"
    _interleaving(monkeypatch, wait=1.0)
    _in_threads({name: (lambda name=name: atomic_write_all([(engine, f"engine {name}".encode()),
                                                           (manifest, f"manifest {name}".encode())]))
                 for name in ("A", "B")})
    writer = engine.read_text().split()[1]
    assert manifest.read_text() == f"manifest {writer}"
    assert sorted(os.listdir(tmp_path)) == ["e.bin", "m.json"]  # no temp file, no lock file left


@POSIX
def test_two_concurrent_builds_to_one_path_end_as_a_matching_pair(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    engine, manifest = tmp_path / "m.engine", tmp_path / "m.manifest.json"
    _interleaving(monkeypatch, wait=3.0)
    parser = make_parser()

    def build(seed: str) -> Callable[[], object]:
        args = parser.parse_args(["build", MLP, "-o", str(engine), "--backend", "cpu", "--seed", seed, "-q"])
        return lambda: args.run(args)

    _in_threads({"A": build("1"), "B": build("2")})
    assert _is_pair(engine, manifest)
    assert sorted(os.listdir(tmp_path)) == ["m.engine", "m.manifest.json"]


# --- a full disk ------------------------------------------------------------------------------------------------

def _disk_full(monkeypatch: pytest.MonkeyPatch) -> None:
    def fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)


def test_a_full_disk_is_a_storage_error_that_replaces_nothing(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    engine, manifest = tmp_path / "e.bin", tmp_path / "m.json"
    atomic_write_all([(engine, b"old engine"), (manifest, b"old manifest")])
    _disk_full(monkeypatch)
    with pytest.raises(StorageError) as caught:
        atomic_write_all([(engine, b"new engine"), (manifest, b"new manifest")])
    assert str(caught.value).startswith(f"cannot write '{engine}': No space left on device (in '{tmp_path}'); free "
                                        "space on that file system")
    assert caught.value.exit_code == 13
    assert (engine.read_bytes(), manifest.read_bytes()) == (b"old engine", b"old manifest")
    assert sorted(os.listdir(tmp_path)) == ["e.bin", "m.json"]


class _FullStream(io.StringIO):
    def flush(self) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_behind_standard_output_is_a_storage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdout", _FullStream())
    with pytest.raises(StorageError, match=r"cannot write to standard output: No space left on device; free "
                                            r"space where it is redirected to"):
        write_output("-", b"{}\n")


@pytest.mark.parametrize("command", ["build", "run --output-dir", "attest -o"])
def test_a_full_disk_exits_13_naming_the_path(command: str, old_pair: tuple[Path, Path],
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    engine, _ = old_pair
    directory = engine.parent
    outputs = directory / "outputs"
    argv, target = {
        "build": (["build", MLP, "-o", str(engine), "--backend", "cpu", "--seed", "2", "-q"], engine),
        "run --output-dir": (["run", str(engine), "--seed", "0", "--output-dir", str(outputs)], outputs / "probs.npy"),
        "attest -o": (["attest", str(engine), "-o", str(directory / "s.json")], directory / "s.json"),
    }[command]
    before = {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}
    capsys.readouterr()
    _disk_full(monkeypatch)
    code, _, err = run_cli(capsys, *argv)
    assert code == 13, err
    assert f"error: cannot write '{target}': No space left on device" in err and "Traceback" not in err, err
    assert {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()} == before
    assert _temps(directory) == [] and (not outputs.exists() or _temps(outputs) == [])

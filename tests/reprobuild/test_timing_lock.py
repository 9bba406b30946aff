"""The timing lock across processes (issue 20, finding 10): its files live in $REPROBUILD_LOCK_DIR, the cpu's is
one per CPU of the process's affinity set (builds on disjoint CPUs never wait for each other, builds that share
a CPU take turns), and a build that waits says so at the default log level."""

from __future__ import annotations

import fcntl
import os
import queue
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from reprobuild.builder.timing_lock import LOCK_DIR_VARIABLE, cpu_set, lock_path
from reprobuild.builder.timing_lock import timing_lock as hold
from reprobuild.core.logger import RecordingLogger
from reprobuild.kernels.backend import get_backend
from tests import conftest
from tests.helpers import EXAMPLES

CPUS = cpu_set()
two_cpus = pytest.mark.skipif(len(CPUS) < 2, reason=f"needs 2 CPUs in this process's affinity set; it has {CPUS}")

#: A process confined to {cpus} that takes the cpu's timing lock, says how long it waited, and lets it go.
CHILD = textwrap.dedent("""
    import os
    os.sched_setaffinity(0, {cpus})
    from reprobuild.builder.timing_lock import timing_lock
    from reprobuild.kernels.backend import get_backend
    from reprobuild.core.logger import Logger
    with timing_lock(get_backend("cpu"), Logger()) as record:
        print("acquired", record["waited"], flush=True)
""")


@pytest.fixture
def lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(LOCK_DIR_VARIABLE, str(tmp_path))
    return tmp_path


class OtherBuild:
    """Holds lock files as a build timing in another process would (a separate open file: flock refuses it to
    this process's builds too)."""

    def __init__(self) -> None:
        self.fds: list[int] = []

    def hold(self, key: str) -> None:
        fd = os.open(lock_path(key), os.O_RDONLY | os.O_CREAT, 0o666)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self.fds.append(fd)

    def release(self) -> None:
        while self.fds:
            os.close(self.fds.pop())  # closing releases the flock


@pytest.fixture
def other(lock_dir: Path) -> Iterator[OtherBuild]:
    build = OtherBuild()
    yield build
    build.release()


def _child(cpus: set[int]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CHILD.format(cpus=cpus)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _first_line(stream: IO[str], containing: str, timeout: float = 60.0) -> str:
    """The first line of ``stream`` with ``containing`` in it (a thread reads, so that a silent child cannot hang
    the test); '' at its end or after ``timeout`` seconds."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stream:
            if containing in line:
                lines.put(line)
                return
        lines.put("")

    threading.Thread(target=read, daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return ""


def test_the_test_session_has_a_lock_dir_of_its_own() -> None:
    """tests/conftest.py points REPROBUILD_LOCK_DIR at a directory of the session (unless the caller set one)."""
    assert conftest.LOCK_DIR_VARIABLE == LOCK_DIR_VARIABLE and os.path.isdir(os.environ[LOCK_DIR_VARIABLE])


def test_the_lock_files_live_in_the_lock_dir(lock_dir: Path) -> None:
    with hold(get_backend("cpu"), RecordingLogger()) as record:
        assert record["waited"] < 5
    names = sorted(p.name for p in lock_dir.iterdir())
    assert names == sorted(f"reprobuild-timing-cpu{n}.lock" for n in CPUS) if CPUS else ["reprobuild-timing-cpu.lock"]


@two_cpus
def test_builds_on_disjoint_cpus_do_not_wait_and_builds_sharing_one_do(other: OtherBuild) -> None:
    """The cpu's lock was one file for the whole machine, so that unrelated processes queued behind each other (a
    0.67 s build took 74 s next to another test suite). Another process timing on CPU a leaves a build confined to
    CPU b alone, and makes one allowed on both wait, saying so."""
    a, b = CPUS[0], CPUS[1]
    other.hold(f"cpu{a}")
    out, err = _child({b}).communicate(timeout=120)
    assert out.startswith("acquired ") and "waiting" not in err, (out, err)
    both = _child({a, b})
    try:
        line = _first_line(both.stderr, "waiting")  # type: ignore[arg-type]
        assert f"waiting for the timing lock of CPU {a}: a build in another process is timing on it" in line, line
        assert both.poll() is None  # still waiting
        other.release()
        out, err = both.communicate(timeout=120)
    finally:
        if both.poll() is None:
            both.kill()
    assert out.startswith("acquired ") and float(out.split()[1]) > 0, (out, err)


def test_a_waiting_build_says_so_at_the_default_verbosity(other: OtherBuild, lock_dir: Path,
                                                         tmp_path: Path) -> None:
    """The wait was logged at INFO, so a build stood silent for as long as another one timed (17-25 s)."""
    for key in [f"cpu{n}" for n in CPUS] or ["cpu"]:
        other.hold(key)
    build = subprocess.Popen([sys.executable, "-m", "reprobuild", "build", f"{EXAMPLES}/mlp.onnx", "-o",
                              str(tmp_path / "mlp.engine"), "--backend", "cpu"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, LOCK_DIR_VARIABLE: str(lock_dir)})
    try:
        line = _first_line(build.stderr, "timing lock")  # type: ignore[arg-type]
        assert line.startswith("[reprobuild] [WARNING] waiting for the timing lock of "), line
        assert "this build times after it, so that neither disturbs the other's measurements" in line
    finally:
        other.release()
        _, err = build.communicate(timeout=300)
    assert build.returncode == 0, err

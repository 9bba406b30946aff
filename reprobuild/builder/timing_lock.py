"""The per-device timing lock: one builder times tactics on a device at a time.

Two builds timing on one GPU (or on the same CPUs) at once disturb each other's measurements, and a build's
choices then depend on what else ran. As TensorRT serializes its builders' timing, a build holds its device's lock
while it times (a replay, which times nothing, never waits). The lock is a ``threading.Lock`` within a process and
``flock``s on files across processes:

- on cuda, one file per GPU, named for its PCI bus id, so that two processes with different
  ``CUDA_VISIBLE_DEVICES`` still agree;
- on the cpu, one file per CPU the process may run on (its affinity set: ``taskset``, a cgroup's cpuset), taken in
  ascending order (so two builds never deadlock). Builds confined to disjoint CPUs time at once; builds that share
  a CPU, as two unconfined ones do, take turns.

The files live in ``$REPROBUILD_LOCK_DIR``, else in the temporary directory: builds that should take turns must
share that directory, and the test suite points it at a directory of its own, so that unrelated suites on one
machine never queue behind each other. It is recorded nowhere: it decides when a build times, never what it
computes. A build that has to wait says so at the default log level (a warning naming the lock and who holds it),
and the wait is recorded in the manifest's evidence (``phase_seconds["timing_lock_wait"]``).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence

from reprobuild.core.logger import Logger
from reprobuild.kernels.backend import Backend

#: The environment variable that names the directory of the lock files (default: the temporary directory).
LOCK_DIR_VARIABLE = "REPROBUILD_LOCK_DIR"

_LOCKS: dict[str, threading.Lock] = {}
_GUARD = threading.Lock()


def device_key(backend: Backend) -> str:
    """'cpu', or 'cuda-0000:19:00.0' (the GPU's PCI bus id): the in-process lock's key."""
    if backend.name != "cuda":
        return backend.name
    device = getattr(backend, "device", None)
    bus = getattr(device, "pci_bus_id", None)
    return f"cuda-{bus or getattr(backend, 'device_id', 0)}"


def cpu_set() -> tuple[int, ...]:
    """The CPUs this process may run on, ascending (empty where the platform does not say)."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    return tuple(sorted(getaffinity(0))) if getaffinity is not None else ()


def lock_keys(backend: Backend) -> list[str]:
    """The cross-process locks a build on ``backend`` holds, in the order it takes them: its GPU's on cuda; on the
    cpu one per CPU of its affinity set ('cpu0', 'cpu1', ...), or 'cpu' where the set is unknown."""
    if backend.name != "cpu":
        return [device_key(backend)]
    return [f"cpu{n}" for n in cpu_set()] or ["cpu"]


def lock_dir() -> str:
    """``$REPROBUILD_LOCK_DIR``, else the temporary directory."""
    return os.environ.get(LOCK_DIR_VARIABLE) or tempfile.gettempdir()


def lock_path(key: str) -> str:
    """Where the cross-process lock file of a key lives (it holds nothing; only its lock matters)."""
    return os.path.join(lock_dir(), f"reprobuild-timing-{re.sub(r'[^A-Za-z0-9._-]', '_', key)}.lock")


@contextlib.contextmanager
def timing_lock(backend: Backend, logger: Logger) -> Iterator[dict[str, float]]:
    """Hold the device's timing lock for the block; yields ``{"waited": seconds}``."""
    key = device_key(backend)
    with _GUARD:
        local = _LOCKS.setdefault(key, threading.Lock())
    record = {"waited": 0.0}
    started = time.perf_counter()
    if not local.acquire(blocking=False):
        logger.warning(f"waiting for the timing lock of {key}: another build in this process is timing on it; this "
                       "build times after it, so that neither disturbs the other's measurements")
        local.acquire()
    try:
        with _file_locks(key, lock_keys(backend), logger):
            record["waited"] = round(time.perf_counter() - started, 4)
            if record["waited"] >= 0.01:
                logger.info(f"timing lock of {key} acquired after {record['waited']:.2f} s")
            else:
                logger.verbose(f"timing lock of {key} acquired")
            yield record
    finally:
        local.release()


@contextlib.contextmanager
def _file_locks(device: str, keys: Sequence[str], logger: Logger) -> Iterator[None]:
    try:
        import fcntl  # lazy: POSIX-only, and builds also run on Windows
    except ImportError:  # not POSIX: builds in one process are still serialized
        yield
        return
    waited = False
    with contextlib.ExitStack() as held:
        for key in keys:
            path = lock_path(key)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
            except OSError as exc:
                logger.warning(f"cannot open the timing lock file {path} ({exc}); builds in other processes may time "
                               f"on {device} at the same time as this one (set {LOCK_DIR_VARIABLE} to a writable "
                               "directory they share)")
                continue
            held.callback(os.close, fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not waited:  # once, however many of its CPUs are busy
                    logger.warning(_waiting(device, key, path))
                    waited = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            held.callback(fcntl.flock, fd, fcntl.LOCK_UN)
        yield


def _waiting(device: str, key: str, path: str) -> str:
    cpu = key != device
    return (f"waiting for the timing lock of {f'CPU {key[3:]}' if cpu else device}: a build in another process is "
            f"timing on it ({path}); this build times after it, so that neither disturbs the other's measurements"
            + (" (builds confined to other CPUs, by taskset or a cpuset, do not wait)" if cpu else ""))

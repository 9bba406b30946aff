"""The per-device timing lock: one builder times tactics on a device at a time.

Two builds timing on one GPU (or one CPU) at once disturb each other's measurements, and a build's choices then
depend on what else ran. As TensorRT serializes its builders' timing, a build holds its device's lock while it
times (a replay, which times nothing, never waits). The lock is a ``threading.Lock`` within a process and an
``flock`` on a file named for the device (its PCI bus id on cuda, so that two processes with different
``CUDA_VISIBLE_DEVICES`` still agree) across processes. A build that has to wait says so in the log, and the wait
is recorded in the manifest's evidence (``phase_seconds["timing_lock_wait"]``); it decides nothing.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator

from reprobuild.kernels.backend import Backend
from reprobuild.logger import Logger

_LOCKS: dict[str, threading.Lock] = {}
_GUARD = threading.Lock()


def device_key(backend: Backend) -> str:
    """'cpu', or 'cuda-0000:19:00.0' (the GPU's PCI bus id)."""
    if backend.name != "cuda":
        return backend.name
    device = getattr(backend, "device", None)
    bus = getattr(device, "pci_bus_id", None)
    return f"cuda-{bus or getattr(backend, 'device_id', 0)}"


def lock_path(key: str) -> str:
    """Where the cross-process lock file of a device lives (it holds nothing; only its lock matters)."""
    return os.path.join(tempfile.gettempdir(), f"reprobuild-timing-{re.sub(r'[^A-Za-z0-9._-]', '_', key)}.lock")


@contextlib.contextmanager
def timing_lock(backend: Backend, logger: Logger) -> Iterator[dict[str, float]]:
    """Hold the device's timing lock for the block; yields ``{"waited": seconds}``."""
    key = device_key(backend)
    with _GUARD:
        local = _LOCKS.setdefault(key, threading.Lock())
    record = {"waited": 0.0}
    started = time.perf_counter()
    if not local.acquire(blocking=False):
        logger.info(f"waiting for the timing lock of {key}: another build in this process is timing on it")
        local.acquire()
    try:
        with _file_lock(key, logger):
            record["waited"] = round(time.perf_counter() - started, 4)
            if record["waited"] >= 0.01:
                logger.info(f"timing lock of {key} acquired after {record['waited']:.2f} s")
            else:
                logger.verbose(f"timing lock of {key} acquired")
            yield record
    finally:
        local.release()


@contextlib.contextmanager
def _file_lock(key: str, logger: Logger) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: builds in one process are still serialized
        yield
        return
    path = lock_path(key)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
    except OSError as exc:
        logger.warning(f"cannot open the timing lock file {path} ({exc}); builds in other processes may time on "
                       f"{key} at the same time as this one")
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info(f"waiting for the timing lock of {key}: a build in another process is timing on it "
                        f"({path})")
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)

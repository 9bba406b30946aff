"""What keeps a group of renames whole (:func:`reprobuild.core.fileio.atomic_write_all`): a lock per target against
other writers of the same outputs, SIGINT and SIGTERM deferred across the renames, and the record of the files
written in full, from which the CLI says truly what a signal left behind.

Locks: an exclusive ``flock`` on a hidden lock file beside each target (``.NAME.reprobuild-lock``), held from the
first temp file to the last rename, so that two builds of the same engine and manifest take turns and the last
one's pair wins whole. Each lock file is removed while still held, and a writer that locked a file since removed
takes the new one: none is left behind, and two writers never hold "the" lock through two different files.

Signals: Python runs signal handlers in the main thread only, whichever thread the kernel delivers a signal to
(OpenBLAS and executor threads do not block it), so blocking the signals in the writing thread with
``pthread_sigmask`` would not keep a handler from running between two renames. The handlers are swapped for one
that only records the signal, and the signal is raised again once the renames are done.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

#: What to raise when a lock file cannot be created: (its path, the OSError) -> the exception.
Failed = Callable[[str, OSError], Exception]


def _lock_path(target: str) -> str:
    """The lock file of ``target``: beside it, in its directory as resolved (one lock for every spelling)."""
    directory = os.path.realpath(os.path.dirname(target) or os.curdir)
    name = os.path.basename(target)
    if len(name.encode()) > 200:  # the lock's name must stay within NAME_MAX (255 bytes)
        name = hashlib.sha256(name.encode()).hexdigest()
    return os.path.join(directory, f".{name}.reprobuild-lock")


def _acquire(path: str, mode: int, failed: Failed) -> int:
    """An exclusive ``flock`` on the lock file ``path``, created if missing. The lock is good only if ``path``
    still names the file locked (a holder that released it may have removed it meanwhile); else take it again."""
    import fcntl  # lazy: POSIX-only, and this module also runs on Windows (where locked() never calls this)

    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0),
                         mode)
        except OSError as exc:
            raise failed(path, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held, named = os.fstat(fd), os.stat(path)
            if (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino):
                return fd
        except FileNotFoundError:
            pass  # removed by the holder that released it: take the new one
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


@contextlib.contextmanager
def locked(targets: Sequence[str], mode: int, failed: Failed) -> Iterator[None]:
    """Hold the lock of every target (lock files created with permissions ``mode``; ``failed(path, error)`` is
    the exception to raise when one cannot be), taken in sorted order so that two writers of overlapping groups
    cannot deadlock. Without ``fcntl`` (not POSIX), writers in other processes are not kept apart."""
    try:
        import fcntl  # noqa: F401  # lazy: POSIX-only; its absence (Windows) is what this probes
    except ImportError:
        yield
        return
    held: list[tuple[str, int]] = []
    try:
        for path in sorted({_lock_path(target) for target in targets}):
            held.append((path, _acquire(path, mode, failed)))
        yield
    finally:
        for path, fd in reversed(held):
            with contextlib.suppress(OSError):
                os.unlink(path)
            os.close(fd)


class _Deferred:
    """Records SIGINT and SIGTERM instead of acting on them."""

    def __init__(self) -> None:
        self.pending: list[int] = []

    def __call__(self, signum: int, frame: Any) -> None:
        if signum not in self.pending:
            self.pending.append(signum)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends, then act as they would have (a KeyboardInterrupt, a
    :class:`~reprobuild.core.fileio.Terminated`, the default action, or nothing if ignored). Off the main thread a
    handler cannot be swapped, and none needs to be: a Python handler never interrupts another thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    deferred = _Deferred()
    previous = {signum: signal.signal(signum, deferred) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        for waiting in deferred.pending:
            signal.raise_signal(waiting)


# --- the record of files written in full ---------------------------------------------------------------------

_written: collections.deque[str] = collections.deque(maxlen=64)
_write_count = 0
_written_lock = threading.Lock()


def record_written(targets: Sequence[str]) -> None:
    global _write_count
    with _written_lock:
        _written.extend(targets)
        _write_count += len(targets)


def write_count() -> int:
    """How many files this process has written in full so far (a mark for :func:`written_since`)."""
    with _written_lock:
        return _write_count


def written_since(mark: int) -> list[str]:
    """The files written in full since :func:`write_count` returned ``mark`` (the last 64 at most)."""
    with _written_lock:
        count = min(_write_count - mark, len(_written))
        return list(_written)[len(_written) - count:] if count > 0 else []

"""File helpers: atomic writes (temp file in the same directory, fsync, rename), atomic pairs of files, and
size-bounded reads that refuse anything but a regular file.

Reads open the path without blocking and check ``fstat`` before reading a byte: a directory, a FIFO, a socket
or a device (``/dev/zero`` would read forever) is refused with a :class:`UsageError`, a regular file over the
limit with a :class:`FormatError`. Temp files are named ``.reprobuild-*.tmp`` beside the target and removed on
any exception, Ctrl-C, and (through :func:`install_sigterm_cleanup`, which the CLI calls) SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import tempfile
from collections.abc import Sequence
from typing import Any

from reprobuild.errors import FormatError, ReprobuildError, UsageError


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Read once at import: new files get the permissions ``open()`` would give them (mkstemp's are owner-only).
_UMASK = _read_umask()


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM once :func:`install_sigterm_cleanup` ran: unwinding runs every
    ``finally`` (temp files are removed) before the process exits with 128 + 15."""

    exit_code = 128 + signal.SIGTERM


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def install_sigterm_cleanup() -> None:
    """Turn SIGTERM into :class:`Terminated` so that an interrupted write removes its temp files (main thread
    only; a no-op elsewhere)."""
    with contextlib.suppress(ValueError):  # not the main thread
        signal.signal(signal.SIGTERM, _raise_terminated)


def check_writable(path: str | os.PathLike[str], what: str) -> None:
    """Refuse, before any work, an output path that is a directory or whose directory cannot be written."""
    target = os.fspath(path)
    if os.path.isdir(target):
        raise UsageError(f"{what} {target!r} is a directory; give a file path")
    directory = os.path.dirname(os.path.abspath(target))
    if os.path.isdir(directory) and not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {target!r}: the directory {directory!r} is not writable")


def _temp_for(target: str) -> tuple[int, str]:
    directory = os.path.dirname(os.path.abspath(target))
    try:
        os.makedirs(directory, exist_ok=True)
        if os.path.isdir(target):
            raise UsageError(f"cannot write {target!r}: it is a directory; give a file path")
        return tempfile.mkstemp(prefix=".reprobuild-", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise UsageError(f"cannot write {target!r}: {exc.strerror or exc}") from None


def _fill(fd: int, tmp: str, data: bytes) -> None:
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~_UMASK)


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` so that ``path`` holds either its old content or all of the new, never a torn file."""
    atomic_write_all([(path, data)])


def atomic_write_all(items: Sequence[tuple[str | os.PathLike[str], bytes]]) -> None:
    """Write several files as a group: every temp file is written and fsynced before the first rename, and the
    renames happen in the order given (put the file that vouches for the others, a manifest, last). A failure
    or signal before the renames leaves every target as it was; only a kill between two renames can leave a
    new file beside an old one, which the last file's digests then reveal (``verify --against``, ``diff``)."""
    targets = [os.fspath(path) for path, _ in items]
    if len(set(map(os.path.abspath, targets))) != len(targets):
        raise UsageError(f"the same path is given twice among {targets}")
    temps: list[str] = []
    try:
        for target, (_, data) in zip(targets, items):
            fd, tmp = _temp_for(target)
            temps.append(tmp)
            _fill(fd, tmp, data)
        for target, tmp in zip(targets, temps):
            try:
                os.replace(tmp, target)
            except OSError as exc:
                raise UsageError(f"cannot write {target!r}: {exc.strerror or exc}") from None
    except BaseException:
        for tmp in temps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise


def read_bounded(path: str | os.PathLike[str], limit: int, what: str,
                 too_big: type[ReprobuildError] = FormatError) -> bytes:
    """Read a whole regular file, refusing a directory, FIFO or device (:class:`UsageError`), and a file larger
    than ``limit`` bytes (``too_big``), before reading it."""
    target = os.fspath(path)
    try:
        fd = os.open(target, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except IsADirectoryError:
        raise UsageError(f"{what} {target!r} is a directory; give a file") from None
    except OSError as exc:
        raise UsageError(f"cannot read {what} {target!r}: {exc.strerror or exc}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        if stat.S_ISDIR(info.st_mode):
            raise UsageError(f"{what} {target!r} is a directory; give a file")
        raise UsageError(f"{what} {target!r} is not a regular file (a FIFO, socket or device such as "
                         "/dev/zero could be read forever); copy it to a file first")
    if info.st_size > limit:
        os.close(fd)
        raise too_big(f"{what} {target!r} is {info.st_size} bytes; the limit is {limit} bytes")
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(info.st_size + 1)  # not limit + 1: read(n) allocates n bytes up front
        except OSError as exc:
            raise UsageError(f"cannot read {what} {target!r}: {exc.strerror or exc}") from None
    if len(data) != info.st_size:  # it changed between the size check and the read
        raise UsageError(f"{what} {target!r} changed size while it was being read; read it when nothing writes it")
    return data

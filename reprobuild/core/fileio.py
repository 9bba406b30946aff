"""File helpers: output paths checked before any work, atomic writes (temp file in the same directory, fsync,
rename), atomic pairs of files, and size-bounded reads that refuse anything but a regular file.

Outputs. :func:`check_output_path` is what every command calls, before any work, for every file it will write:
it refuses a symbolic link and anything that is not a regular file (a directory, a FIFO, a socket, a device such
as ``/dev/null``: a rename would replace it), a missing directory (none is created, but for the one directory an
option such as ``run --output-dir`` names: :func:`check_output_directory`), and a directory where no file can be
created (tried by creating and removing a temp file: ``access()`` says yes to root on a read-only file system or
in ``/proc``). ``-`` means standard output where an option writes one document (:func:`write_output`); elsewhere
it is refused, never a file named ``-``.

Writes. :func:`atomic_write_all` writes a group of files (an engine and its manifest) so that they stay a pair:
holding a lock per target (so that two processes writing the same outputs take turns from the first temp file to
the last rename), every temp file is written and fsynced, then renamed with SIGINT and SIGTERM deferred, so that
Ctrl-C or a kill lands before the first rename (nothing replaced) or after the last (a complete pair), never
between (:mod:`reprobuild.core.fileguard`). A full disk is a :class:`StorageError`. Temp files are named
``.reprobuild-*.tmp`` beside the target and removed on any exception, Ctrl-C, and (through
:func:`install_sigterm_cleanup`, which the CLI calls) SIGTERM. :func:`written_since` tells the CLI which files
were written in full, so that its message after a signal is true.

Reads open the path without blocking and check ``fstat`` before reading a byte: a directory, a FIFO, a socket
or a device (``/dev/zero`` would read forever) is refused with a :class:`UsageError`, a regular file over the
limit with a :class:`FormatError`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
import signal
import stat
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from reprobuild.core.errors import FormatError, ReprobuildError, StorageError, UsageError
from reprobuild.core.fileguard import locked, record_written, signals_deferred, write_count, written_since

__all__ = ["STDOUT", "Terminated", "atomic_write", "atomic_write_all", "check_output_directory", "check_output_path",
           "document_on_stdout", "install_sigterm_cleanup", "make_output_directory", "read_bounded", "write_count",
           "write_output", "written_since"]

#: ``-`` as an output path: standard output, for options that write one document.
STDOUT = "-"


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


# --- output paths ----------------------------------------------------------------------------------------------

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _directory_of(target: str) -> str:
    """The directory a temp file for ``target`` goes in: the path's own parent, as the kernel resolves it."""
    return os.path.dirname(target) or os.curdir


def _check_target(target: str, what: str, stdout: bool) -> None:
    """Refuse a target that exists and is not a regular file: a rename would replace the link or the special
    file itself (``/dev/null``, a FIFO a reader waits on) with a regular one."""
    hint = "; give '-' for standard output" if stdout else ""
    if target.endswith(("/", os.sep)):
        raise UsageError(f"{what} {target!r} ends in a path separator, naming a directory; give a file path{hint}")
    try:
        info = os.lstat(target)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise UsageError(f"{what} {target!r} cannot be used: {exc.strerror or exc}") from None
    if stat.S_ISLNK(info.st_mode):
        to = ""
        with contextlib.suppress(OSError):
            to = f" (to {os.readlink(target)!r})"
        raise UsageError(f"{what} {target!r} is a symbolic link{to}; reprobuild writes a new file and renames it "
                         "into place, which would replace the link itself, so it refuses: give the path the link "
                         f"points to, or remove the link{hint}")
    if stat.S_ISREG(info.st_mode):
        return
    kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a regular file")
    if kind == "a directory":
        raise UsageError(f"{what} {target!r} is a directory; give a file path{hint}")
    raise UsageError(f"{what} {target!r} is {kind}, not a regular file; reprobuild writes a new file and renames "
                     f"it into place, which would replace the {kind[2:]} itself, so it refuses{hint}")


def _probe_directory(directory: str, what: str, target: str) -> None:
    """The directory exists, is a directory, and a file can be created in it (created and removed again)."""
    try:
        info = os.stat(directory)
    except FileNotFoundError:
        raise _missing(f"{what} {target!r}", directory) from None
    except OSError as exc:
        raise UsageError(f"{what} {target!r}: the directory {directory!r} cannot be used: "
                         f"{exc.strerror or exc}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise UsageError(f"{what} {target!r}: {directory!r} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".reprobuild-", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise _write_error(target, directory, exc, f"{what} {target!r}: no file can be created in the directory "
                                                   f"{directory!r}") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def check_output_path(path: str | os.PathLike[str], what: str, stdout: bool = False) -> None:
    """Refuse, before any work, an output path reprobuild must not or cannot write (see the module docstring):
    a :class:`UsageError` (exit code 2) that names the option (``what``) and the problem. ``stdout``: the option
    accepts ``-`` for standard output; elsewhere ``-`` is refused rather than written as a file named ``-``."""
    target = os.fspath(path)
    if target == STDOUT:
        if stdout:
            return
        raise UsageError(f"{what} '-': this option writes a file, not standard output; give a file path "
                         "(./- for a file named '-')")
    _check_target(target, what, stdout)
    _probe_directory(_directory_of(target), what, target)


def check_output_directory(path: str | os.PathLike[str], what: str) -> None:
    """Refuse, before any work, a directory to write files into that is not a directory (a symbolic link to one is
    fine: nothing replaces the directory itself) or where no file can be created. A missing one is created by
    :func:`make_output_directory` when the files are written, so its parent must exist and take a new entry: the
    directory the option names is created, never its missing parents."""
    directory = os.fspath(path)
    if directory == STDOUT:
        raise UsageError(f"{what} '-': this option names a directory to write files into, not standard output; "
                         "give a directory (./- for one named '-')")
    if os.path.lexists(directory) and not os.path.isdir(directory):
        raise UsageError(f"{what} {directory!r} exists and is not a directory; give a directory")
    if os.path.isdir(directory):
        _probe_directory(directory, what, directory)
    else:
        _probe_directory(_directory_of(directory.rstrip("/" + os.sep) or os.sep), what, directory)


def make_output_directory(path: str | os.PathLike[str]) -> None:
    """Create the directory an option names to write files into, if missing (not its parents: see
    :func:`check_output_directory`)."""
    directory = os.fspath(path)
    try:
        os.mkdir(directory)
    except FileExistsError:
        if not os.path.isdir(directory):
            raise UsageError(f"{directory!r} exists and is not a directory; give a directory") from None
    except FileNotFoundError:
        raise _missing(f"cannot create {directory!r}", _directory_of(directory.rstrip("/" + os.sep) or os.sep)
                       ) from None
    except OSError as exc:
        raise _write_error(directory, _directory_of(directory), exc) from None


# --- errors ----------------------------------------------------------------------------------------------------

#: errno values that mean "no room": the disk or the inodes are full, a quota or a file-size limit is reached.
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def _write_error(target: str, directory: str, exc: OSError, prefix: str | None = None) -> ReprobuildError:
    """A typed error for an OSError while writing: StorageError (exit 13) when there is no room, else UsageError."""
    reason = exc.strerror or str(exc)
    if exc.errno in _NO_ROOM:
        return StorageError(f"{prefix or f'cannot write {target!r}'}: {reason} (in {directory!r}); free space on "
                            "that file system (or raise the quota), or write elsewhere; nothing was replaced and no "
                            "temp file is left")
    return UsageError(f"{prefix or f'cannot write {target!r}'}: {reason}")


def _missing(prefix: str, directory: str) -> UsageError:
    return UsageError(f"{prefix}: the directory {directory!r} does not exist, and reprobuild does not create it: "
                      f"create it first (mkdir -p {shlex.quote(directory)}) or give another path")


def _lock_error(path: str, exc: OSError) -> ReprobuildError:
    return _write_error(path, _directory_of(path), exc, f"cannot create the lock file {path!r} that keeps writers of "
                                                        "the same output apart")


# --- atomic writes ---------------------------------------------------------------------------------------------

def _temp_for(target: str) -> tuple[int, str]:
    directory = _directory_of(target)
    try:
        return tempfile.mkstemp(prefix=".reprobuild-", suffix=".tmp", dir=directory)
    except FileNotFoundError:
        raise _missing(f"cannot write {target!r}", directory) from None
    except OSError as exc:
        raise _write_error(target, directory, exc) from None


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
    """Write several files as a group (see the module docstring): a signal, a full disk or any failure before the
    renames leaves every target as it was; a signal during them waits for the last one. Renames happen in the
    order given (put the file that vouches for the others, a manifest, last)."""
    targets = [os.fspath(path) for path, _ in items]
    if len(set(map(os.path.abspath, targets))) != len(targets):
        raise UsageError(f"the same path is given twice among {targets}")
    for target in targets:  # a library caller may not have checked: the typed errors, before any lock file
        _check_target(target, "output", stdout=False)
        if not os.path.isdir(_directory_of(target)):
            raise _missing(f"cannot write {target!r}", _directory_of(target))
    temps: list[str] = []
    try:
        with locked(targets, 0o666 & ~_UMASK, _lock_error):
            for target in targets:  # again: a long build may have given something time to appear there
                _check_target(target, "output", stdout=False)
            for target, (_, data) in zip(targets, items):
                fd, tmp = _temp_for(target)
                temps.append(tmp)
                try:
                    _fill(fd, tmp, data)
                except OSError as exc:
                    raise _write_error(target, _directory_of(target), exc) from None
            with signals_deferred():
                _rename_all(targets, temps)
                temps = []
                record_written(targets)
    except BaseException:
        for tmp in temps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise


def _rename_all(targets: Sequence[str], temps: list[str]) -> None:
    for done, (target, tmp) in enumerate(zip(targets, temps)):
        try:
            os.replace(tmp, target)
        except OSError as exc:
            replaced = (f"; {', '.join(map(repr, targets[:done]))} had already been replaced, so the files are not a "
                        "matching group: write them again" if done else "")
            del temps[:done]  # renamed: nothing of theirs to remove
            raise UsageError(f"cannot write {target!r}: {exc.strerror or exc}{replaced}") from None


def write_output(path: str | os.PathLike[str], data: bytes) -> None:
    """Write one document to ``path``, or to standard output when it is ``-`` (:data:`STDOUT`); on standard
    output a full disk is a StorageError too, and a closed pipe a BrokenPipeError (the CLI exits 141)."""
    target = os.fspath(path)
    if target != STDOUT:
        atomic_write(target, data)
        return
    stream = _document_streams[-1] if _document_streams else sys.stdout
    try:
        stream.write(data.decode("utf-8"))
        stream.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.errno in _NO_ROOM:
            raise StorageError(f"cannot write to standard output: {reason}; free space where it is redirected to, "
                               "or write the document elsewhere") from None
        raise UsageError(f"cannot write to standard output: {reason}") from None


_document_streams: list[TextIO] = []


@contextlib.contextmanager
def document_on_stdout(path: str | os.PathLike[str] | None) -> Iterator[None]:
    """When ``path`` is ``-``, keep standard output for the one document :func:`write_output` writes there:
    everything else the command prints goes to stderr meanwhile (``verify --report - | jq``)."""
    if path is None or os.fspath(path) != STDOUT:
        yield
        return
    _document_streams.append(sys.stdout)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _document_streams.pop()


# --- reads -----------------------------------------------------------------------------------------------------

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

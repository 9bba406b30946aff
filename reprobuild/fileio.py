"""File helpers: atomic writes (temp file in the same directory, fsync, rename) and size-bounded reads."""

from __future__ import annotations

import contextlib
import os
import tempfile

from reprobuild.errors import FormatError, UsageError


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Read once at import: new files get the permissions ``open()`` would give them (mkstemp's are owner-only).
_UMASK = _read_umask()


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` so that ``path`` holds either its old content or all of the new, never a torn file."""
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".reprobuild-", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise UsageError(f"cannot write {target!r}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_bounded(path: str | os.PathLike[str], limit: int, what: str) -> bytes:
    """Read a whole file, refusing one larger than ``limit`` bytes before reading it."""
    target = os.fspath(path)
    try:
        size = os.path.getsize(target)
        if size > limit:
            raise FormatError(f"{what} {target!r} is {size} bytes; the limit is {limit} bytes")
        with open(target, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {target!r}: {exc.strerror or exc}") from None
    if len(data) > limit:  # the file grew between the size check and the read
        raise FormatError(f"{what} {target!r} is over the limit of {limit} bytes")
    return data

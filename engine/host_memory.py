"""How much memory this process may really use on the host: the default memory cap of cpu engines and builds.

The host's physical memory is only an upper bound: a container's cgroup (``memory.max`` in cgroup v2,
``memory.limit_in_bytes`` in v1, of this process's cgroup and every cgroup above it) and the address-space limit
(``ulimit -v``, ``RLIMIT_AS``) are often far lower, and an engine that fits the machine but not them failed with
an untyped MemoryError where it should have been refused. :func:`host_memory_cap` is the least of them, with a
phrase saying which one it is.

cgroup files are found through ``/proc/self/mountinfo`` (cgroup v2 may be mounted at ``/sys/fs/cgroup`` or, on a
hybrid host, at ``/sys/fs/cgroup/unified``) and ``/proc/self/cgroup``; anything missing or unreadable simply
does not limit. Nothing here is a numeric input of a build: the cap only decides what is refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from reprobuild.engine.memory import physical_memory_bytes

#: cgroup v1 writes "no limit" as a page-rounded 2**63 - 1; anything this large is no limit either.
_UNLIMITED = 2**60


def host_memory_cap(proc: str = "/proc/self") -> tuple[int | None, str]:
    """The least of the host's physical memory, this process's cgroup memory limits and its address-space limit,
    and where it comes from; (None, why) where none is known."""
    limits = memory_limits(proc)
    if not limits:
        return None, "no limit: the OS tells neither the host's memory nor a limit of this process"
    return min(limits, key=lambda limit: limit[0])


def memory_limits(proc: str = "/proc/self") -> list[tuple[int, str]]:
    """Every known limit on this process's memory, in bytes, each with a phrase saying what it is."""
    limits: list[tuple[int, str]] = []
    physical = physical_memory_bytes()
    if physical is not None:
        limits.append((physical, "the host's physical memory"))
    limits += cgroup_memory_limits(proc)
    address_space = address_space_limit()
    if address_space is not None:
        limits.append((address_space, "this process's address-space limit (ulimit -v, RLIMIT_AS)"))
    return limits


def address_space_limit() -> int | None:
    """The soft ``RLIMIT_AS`` in bytes; None when unlimited or unknown (no ``resource`` module)."""
    try:
        import resource  # lazy: POSIX only
    except ImportError:  # not a Unix
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY or soft < 0 else int(soft)


def cgroup_memory_limits(proc: str = "/proc/self") -> list[tuple[int, str]]:
    """The memory limit of this process's cgroup, or of a cgroup above it, in cgroup v2 and v1 (each the least
    along the path up to the mount); [] where there is none or the files cannot be read."""
    try:
        with open(os.path.join(proc, "cgroup"), encoding="utf-8") as f:
            memberships = f.read().splitlines()
        with open(os.path.join(proc, "mountinfo"), encoding="utf-8") as f:
            mounts = f.read().splitlines()
    except OSError:
        return []
    out = []
    for version, controller_file, path in _memberships(memberships):
        for mount_point, mount_root in _mounts(mounts, version):
            found = _least_along(mount_point, mount_root, path, controller_file)
            if found is not None:
                out.append(found)
                break
    return out


def _memberships(lines: list[str]) -> Iterator[tuple[int, str, str]]:
    """(cgroup version, the limit's file name, this process's cgroup path) from ``/proc/self/cgroup``."""
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            yield 2, "memory.max", path
        elif "memory" in controllers.split(","):
            yield 1, "memory.limit_in_bytes", path


def _mounts(lines: list[str], version: int) -> Iterator[tuple[str, str]]:
    """(mount point, the cgroup path mounted there) of each cgroup v2 mount, or of each v1 mount of the memory
    controller, from ``/proc/self/mountinfo``."""
    for line in lines:
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        if len(fields) < dash + 4 or dash < 5:
            continue
        fstype, options = fields[dash + 1], fields[dash + 3].split(",")
        if (version == 2 and fstype == "cgroup2") or (version == 1 and fstype == "cgroup" and "memory" in options):
            yield _unescape(fields[4]), _unescape(fields[3])


def _unescape(field: str) -> str:
    """mountinfo writes a space, tab, newline and backslash in a path as octal escapes (\\040 ...)."""
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field = field.replace(code, chr(int(code[1:], 8)))
    return field


def _least_along(mount_point: str, mount_root: str, path: str, name: str) -> tuple[int, str] | None:
    """The least limit in file ``name`` of the cgroup ``path`` and every cgroup above it that the mount shows."""
    relative = path[len(mount_root):] if path.startswith(mount_root) else path  # a cgroup namespace shows "/"
    parts = [p for p in relative.split("/") if p]
    least: tuple[int, str] | None = None
    for depth in range(len(parts), -1, -1):
        directory = os.path.join(mount_point, *parts[:depth])
        value = _read_limit(os.path.join(directory, name))
        if value is not None and (least is None or value < least[0]):
            version = "v2" if name == "memory.max" else "v1"
            least = (value, f"the memory limit of this process's cgroup ({name} in {directory}, cgroup {version})")
    return least


def _read_limit(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not text.isdigit():  # "max": no limit
        return None
    value = int(text)
    return value if 0 < value < _UNLIMITED else None

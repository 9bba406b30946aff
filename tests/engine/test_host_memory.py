"""The default memory cap on cpu: the least of the host's physical memory, this process's cgroup limits (v2 and
v1, found through mountinfo, along the path up to the mount) and its address-space limit, read here from a fake
/proc and cgroup tree."""

from __future__ import annotations

import os
import resource
from pathlib import Path

import pytest

from reprobuild.engine import host_memory
from reprobuild.engine.host_memory import cgroup_memory_limits, host_memory_cap
from reprobuild.engine.runtime import default_max_memory
from reprobuild.kernels.backend import get_backend

GiB = 1 << 30


def _proc(tmp_path: Path, cgroup: str, mounts: list[str]) -> str:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text(cgroup)
    (proc / "mountinfo").write_text("\n".join(mounts) + "\n")
    return str(proc)


def _limit(directory: Path, name: str, value: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(value + "\n")


def test_cgroup_v2_the_least_limit_along_the_path_up_to_the_mount(tmp_path: Path) -> None:
    root = tmp_path / "cg2"
    _limit(root / "box", "memory.max", str(3 * GiB))
    _limit(root / "box" / "job", "memory.max", "max")  # no limit of its own: the parent's holds
    proc = _proc(tmp_path, "0::/box/job\n", [f"30 25 0:26 / {root} rw,nosuid - cgroup2 cgroup2 rw"])
    [(value, where)] = cgroup_memory_limits(proc)
    assert value == 3 * GiB
    assert where == f"the memory limit of this process's cgroup (memory.max in {root / 'box'}, cgroup v2)"


def test_cgroup_v1_memory_controller_on_a_hybrid_host(tmp_path: Path) -> None:
    """A hybrid host: v1's memory controller at .../memory, v2 at .../unified without a limit."""
    v1, v2 = tmp_path / "memory", tmp_path / "unified"
    _limit(v1 / "api" / "job", "memory.limit_in_bytes", str(2 * GiB))
    _limit(v1, "memory.limit_in_bytes", "9223372036854771712")  # v1's "no limit"
    v2.mkdir()
    proc = _proc(tmp_path, "4:memory:/api/job\n0::/\n1:cpu,cpuacct:/\n", [
        f"40 30 0:35 / {v1} rw,nosuid - cgroup cgroup rw,memory",
        f"41 30 0:36 / {v2} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate",
        f"42 30 0:37 / {tmp_path / 'cpu'} rw - cgroup cgroup rw,cpu,cpuacct",
    ])
    [(value, where)] = cgroup_memory_limits(proc)
    assert value == 2 * GiB and "memory.limit_in_bytes" in where and "cgroup v1" in where


def test_a_cgroup_namespace_root_and_missing_files_limit_nothing(tmp_path: Path) -> None:
    root = tmp_path / "cg2"
    _limit(root, "memory.max", str(GiB))  # the container's own limit, at its namespace root
    proc = _proc(tmp_path, "0::/\n", [f"30 25 0:26 / {root} rw - cgroup2 cgroup2 rw"])
    assert cgroup_memory_limits(proc) == [(GiB, f"the memory limit of this process's cgroup (memory.max in "
                                                f"{root}, cgroup v2)")]
    assert cgroup_memory_limits(str(tmp_path / "no-proc")) == []
    (tmp_path / "other").mkdir()
    gone = _proc(tmp_path / "other", "0::/gone\n", [f"30 25 0:26 / {tmp_path / 'nowhere'} rw - cgroup2 cgroup2 rw"])
    assert cgroup_memory_limits(gone) == []


def test_the_least_limit_decides_and_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "cg2"
    _limit(root, "memory.max", str(6 * GiB))
    proc = _proc(tmp_path, "0::/\n", [f"30 25 0:26 / {root} rw - cgroup2 cgroup2 rw"])
    monkeypatch.setattr(host_memory, "physical_memory_bytes", lambda: 64 * GiB)
    monkeypatch.setattr(host_memory, "address_space_limit", lambda: None)
    assert host_memory_cap(proc)[0] == 6 * GiB and "cgroup" in host_memory_cap(proc)[1]
    monkeypatch.setattr(host_memory, "address_space_limit", lambda: 5 * GiB)
    assert host_memory_cap(proc) == (5 * GiB, "this process's address-space limit (ulimit -v, RLIMIT_AS)")
    monkeypatch.setattr(host_memory, "physical_memory_bytes", lambda: 4 * GiB)
    assert host_memory_cap(proc) == (4 * GiB, "the host's physical memory")
    monkeypatch.setattr(host_memory, "physical_memory_bytes", lambda: None)
    monkeypatch.setattr(host_memory, "address_space_limit", lambda: None)
    assert host_memory_cap(str(tmp_path / "none"))[0] is None


def test_the_cpu_default_cap_reads_this_process() -> None:
    """The runtime's (and the builder's) default on cpu is host_memory_cap of this process: with RLIMIT_AS
    lowered below the host's memory (in this process, restored after), that limit decides."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    target = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    if soft != resource.RLIM_INFINITY:
        target = min(target, soft - 1)
    with open("/proc/self/statm") as f:
        mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    if mapped + GiB > target:  # a process holding a CUDA context maps far more than it uses
        pytest.skip(f"this process already maps {mapped} bytes; a limit below half the host's memory would starve it")
    resource.setrlimit(resource.RLIMIT_AS, (target, hard))
    try:
        cap = default_max_memory(get_backend("cpu"))
        assert cap[0] is not None and cap[0] <= target
        assert cap[1] in {"this process's address-space limit (ulimit -v, RLIMIT_AS)",
                          *(where for _, where in cgroup_memory_limits())}
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))

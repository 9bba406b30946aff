"""The package's NVRTC kernels run on the host, so a machine without a GPU can check their C (index arithmetic,
conversions, the generated sources) against the references.

The kernel's own source is compiled by g++ as C++17 with a forced-include shim: ``__global__``/``__device__`` are
dropped, ``blockIdx``/``threadIdx``/``gridDim``/``blockDim`` are per-thread host variables, ``__syncthreads`` a
barrier, ``__shared__`` memory static, and the CUDA intrinsics the kernels use (``__fadd_rn`` ...) are the host's
IEEE operations (``-ffp-contract=off``: no fused multiply-add, as NVRTC's ``__f*_rn``). ``dtype.cuh`` is replaced
by a host version: float16 through GCC's ``_Float16`` (round to nearest even, as ``cvt.rn.f16.f32``); bfloat16
by the same integer code. A launch runs every thread of a small grid, one block at a time, each block's threads
as OS threads, whatever grid the tactic asked for: the grid-stride kernels are correct for any grid (a few
threads of 4 a block exercise the striding), and the block reductions get their full block of 256 threads, so
reduce.cuh's tree and its barriers run for real.

What this does not check: the PTX conversions themselves, the device's ``expf``/``sqrtf``, memory-model effects
and timing; the ``gpu`` tests do that on a GPU host.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reprobuild.kernels.backend import CudaBackend
from reprobuild.kernels.launch import KernelLaunch, LaunchPlan, Ref

KERNELS = Path(__file__).resolve().parents[2] / "kernels"
GXX = shutil.which("g++")

SHIM = r"""
#pragma once
#include <barrier>
#include <cmath>
#include <cstring>
#include <math.h>
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __shared__ static
struct HostDim { unsigned int x, y, z; };
inline thread_local HostDim threadIdx{0, 0, 0};
inline HostDim blockIdx{0, 0, 0}, gridDim{1, 1, 1}, blockDim{1, 1, 1};
inline std::barrier<>* host_barrier = nullptr;
inline void __syncthreads() { host_barrier->arrive_and_wait(); }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned int u) { float f; std::memcpy(&f, &u, 4); return f; }
inline unsigned int __float_as_uint(float f) { unsigned int u; std::memcpy(&u, &f, 4); return u; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline float __double2float_rz(double d)
{
    float f = (float)d;
    if (std::fabs((double)f) > std::fabs(d)) f = std::nextafter(f, 0.f);
    return f;
}
extern "C" void host_set_block(unsigned int bx, unsigned int gx, unsigned int bdim)
{
    blockIdx = HostDim{bx, 0, 0};
    gridDim = HostDim{gx, 1, 1};
    blockDim = HostDim{bdim, 1, 1};
}
extern "C" void host_set_thread(unsigned int tx) { threadIdx = HostDim{tx, 0, 0}; }
extern "C" void host_new_barrier(int n) { delete host_barrier; host_barrier = new std::barrier<>(n); }
"""

#: dtype.cuh's interface on the host (ld, to_half, bf16_t, to_bf16, elem_t, to_elem, rnd).
DTYPE = r"""
#pragma once
inline float ld(float v) { return v; }
inline float ld(unsigned short h) { _Float16 f; std::memcpy(&f, &h, 2); return (float)f; }
inline unsigned short to_half(float f) { _Float16 h = (_Float16)f; unsigned short u; std::memcpy(&u, &h, 2); return u; }
struct bf16_t { unsigned short bits; };
inline float ld(bf16_t b) { return __uint_as_float(((unsigned int)b.bits) << 16); }
inline bf16_t to_bf16(float f)
{
    const unsigned int u = __float_as_uint(f);
    bf16_t b;
    b.bits = (u & 0x7fffffffu) > 0x7f800000u ? (unsigned short)(((u >> 16) & 0x8000u) | 0x7fc0u)
                                              : (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    return b;
}
#if defined(REPRO_HALF)
typedef unsigned short elem_t;
inline elem_t to_elem(float f) { return to_half(f); }
#elif defined(REPRO_BF16)
typedef bf16_t elem_t;
inline elem_t to_elem(float f) { return to_bf16(f); }
#else
typedef float elem_t;
inline elem_t to_elem(float f) { return f; }
#endif
inline float rnd(float f) { return ld(to_elem(f)); }
"""

DEFINES = {"float32": (), "float16": ("-DREPRO_HALF=1",), "bfloat16": ("-DREPRO_BF16=1",)}
#: The small grid every launch is run with: GRID blocks of STRIDE_THREADS threads, or of the launch's own block size
#: for the kernels that reduce within a block (their trees need every thread).
GRID, STRIDE_THREADS = 3, 4
BLOCK_KERNELS = ("reduce_rows", "rmsnorm_rows", "rmsnorm_rows_input_scale")


class HostFunction:
    """A kernel of a host-compiled library: ``launch`` runs every thread of the emulated grid."""

    def __init__(self, lib: ctypes.CDLL, name: str) -> None:
        self.lib, self.name = lib, name

    def launch(self, args: Sequence[Any], block_threads: int) -> None:
        fn = getattr(self.lib, self.name)
        fn.argtypes = [type(a) if not isinstance(a, int) else ctypes.c_void_p for a in args]
        errors: list[BaseException] = []

        def run(tx: int) -> None:
            try:
                self.lib.host_set_thread(tx)
                fn(*args)
            except BaseException as exc:  # reported after the join
                errors.append(exc)

        for bx in range(GRID):  # one block at a time: its threads share the static __shared__ memory
            self.lib.host_set_block(bx, GRID, block_threads)
            self.lib.host_new_barrier(block_threads)
            workers = [threading.Thread(target=run, args=(tx,)) for tx in range(block_threads)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            if errors:
                raise errors[0]


class HostCompiler:
    """Compiles package files (per dtype) and generated sources with g++, once each, into ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        (workdir / "host_shim.h").write_text(SHIM)
        (workdir / "dtype.cuh").write_text(DTYPE)
        self.libs: dict[tuple[str, str], ctypes.CDLL] = {}

    def build(self, name: str, source: str, defines: Sequence[str] = ()) -> ctypes.CDLL:
        key = (name, " ".join(defines))
        if key not in self.libs:
            src = self.workdir / f"{Path(name).stem}{''.join(d[2:].split('=')[0] for d in defines)}.cpp"
            src.write_text(source)
            lib = src.with_suffix(".so")
            subprocess.run([str(GXX), "-std=c++20", "-O1", "-ffp-contract=off", "-shared", "-fPIC", "-pthread",
                            "-include", str(self.workdir / "host_shim.h"), "-I", str(self.workdir), "-I",
                            str(KERNELS), *defines, "-o", str(lib), str(src)], check=True, capture_output=True)
            self.libs[key] = ctypes.CDLL(str(lib))
        return self.libs[key]

    def package_function(self, filename: str, name: str, dtype: str) -> HostFunction:
        return HostFunction(self.build(filename, (KERNELS / filename).read_text(), DEFINES[dtype]), name)


class HostBackend(CudaBackend):
    """What a tactic's ``prepare`` sees as the CUDA backend: arrays are NumPy's, and nothing touches CuPy."""

    def __init__(self) -> None:  # not CudaBackend's, which would open a device
        self.xp = np
        self.device_id = 0
        self.device = contextlib.nullcontext()
        self.compute_capability = "90"

    def asarray(self, host: np.ndarray) -> np.ndarray:
        return np.array(host, copy=True)


@contextlib.contextmanager
def host_kernels(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HostBackend]:
    """A backend whose tactics' launches run host-compiled kernels (package files and generated sources)."""
    if GXX is None:
        pytest.skip("g++ is not installed")
    compiler = HostCompiler(workdir)

    class Generated:
        def __init__(self, name: str, source: str) -> None:
            self.lib = compiler.build(name, source)

        def function(self, kernel: str) -> HostFunction:
            return HostFunction(self.lib, kernel)

    def load_source(name: str, source: str, *args: Any, **kwargs: Any) -> Generated:
        return Generated(name, source)

    monkeypatch.setattr("reprobuild.kernels.cuda_launch.kernel",
                        lambda backend, filename, name, dtype="float32": compiler.package_function(filename, name,
                                                                                                 dtype))
    monkeypatch.setattr("reprobuild.kernels.logic.load_source", load_source)
    yield HostBackend()


def _c_arg(arg: Any, inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> Any:
    if isinstance(arg, Ref):
        buffer = (inputs if arg.role == "in" else outputs)[arg.index]
        return ctypes.c_void_p(buffer.ctypes.data + arg.offset)
    if arg is None:
        return ctypes.c_void_p(None)
    if isinstance(arg, np.ndarray):
        return ctypes.c_void_p(arg.ctypes.data)
    kinds = {np.int32: ctypes.c_int, np.int64: ctypes.c_longlong, np.uint64: ctypes.c_ulonglong,
             np.float32: ctypes.c_float}
    return kinds[type(arg)](arg.item())


def run_plan(plan: LaunchPlan, inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> None:
    """Run a prepared plan's launches, in order, on the host."""
    for launch in plan.launches:
        assert isinstance(launch, KernelLaunch), f"{launch} is not a kernel launch"
        args = [_c_arg(a, inputs, outputs) for a in launch.args]
        block_wide = launch.kernel.split(":")[-1].split("[")[0] in BLOCK_KERNELS
        launch.function.launch(args, launch.block[0] if block_wide else STRIDE_THREADS)

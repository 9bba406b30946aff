"""What decides the CPU backend's numbers besides the model: the BLAS library NumPy calls and the kernel it picked
at run time, the CPU (vendor, family, model, the instruction-set flags that code is dispatched on), NumPy's SIMD
dispatch targets, and the environment variables those libraries read.

Why each part: OpenBLAS as NumPy ships it (a ``DYNAMIC_ARCH`` build) chooses its kernels ("core") when it is loaded,
from the CPU's vendor, family, model and flags, or from ``OPENBLAS_CORETYPE``; one machine gives other bits under
``OPENBLAS_CORETYPE=Haswell`` than under its own ``SkylakeX``, with every version number unchanged. NumPy picks its
vectorized exp, sin, ... per SIMD target the same way. So the fingerprint records the choice itself (``blas.core``,
``cpu.simd``) and what it is made from (``cpu.*``, ``env.*``), and a replay elsewhere names the field that differs.

Everything is read once per process and returned as a copy (STYLE 15): the libraries themselves read the CPU and
their variables once, when they are loaded, so a variable set later changes nothing and must not be recorded.
"""

from __future__ import annotations

import functools
import importlib
import os
import platform
import re
import subprocess
from collections.abc import Mapping
from typing import Any

import numpy as np

UNSET = "<unset>"
UNKNOWN = "unknown"

#: Environment variables that change CPU numerics, each with the reason. Thread counts matter because a threaded
#: reduction (dot, gemv, a split GEMM) adds its partial sums per thread; kernel and instruction-set choices matter
#: because another kernel adds in another order (or fuses multiply-adds).
CPU_NUMERIC_ENV: dict[str, str] = {
    "BLIS_ARCH_TYPE": "forces BLIS's kernel configuration (BLIS's OPENBLAS_CORETYPE)",
    "BLIS_NUM_THREADS": "BLIS's thread count",
    "GOTO_NUM_THREADS": "OpenBLAS's thread count (its older name)",
    "KMP_DETERMINISTIC_REDUCTION": "Intel OpenMP (MKL's threading): whether reductions combine in a fixed order",
    "MKL_CBWR": "MKL's conditional numerical reproducibility: the code branch MKL runs (AUTO, COMPATIBLE, AVX2, ...)",
    "MKL_DEBUG_CPU_TYPE": "forces MKL's code path on AMD CPUs (MKL 2020.0 and older)",
    "MKL_DOMAIN_NUM_THREADS": "MKL's thread count per domain (BLAS, FFT, ...)",
    "MKL_DYNAMIC": "whether MKL may use fewer threads than asked",
    "MKL_ENABLE_INSTRUCTIONS": "caps the instruction set MKL dispatches to (AVX2, AVX512, ...)",
    "MKL_NUM_THREADS": "MKL's thread count",
    "MKL_THREADING_LAYER": "MKL's threading runtime (INTEL, GNU, TBB, SEQUENTIAL)",
    "NPY_DISABLE_CPU_FEATURES": "turns off NumPy SIMD dispatch targets (its exp, sin, ... take other code paths)",
    "NPY_ENABLE_CPU_FEATURES": "limits NumPy's SIMD dispatch targets to a list",
    "OMP_DYNAMIC": "whether an OpenMP runtime (OpenMP builds of OpenBLAS, MKL on OpenMP) may use fewer threads",
    "OMP_NUM_THREADS": "OpenMP runtimes' thread count, and OpenBLAS's when its own variables are unset",
    "OMP_THREAD_LIMIT": "caps the threads of an OpenMP runtime",
    "OPENBLAS_BLOCK_FACTOR": "scales OpenBLAS's GEMM blocking",
    "OPENBLAS_CORETYPE": "forces OpenBLAS's kernel (core) instead of detecting the CPU",
    "OPENBLAS_DEFAULT_NUM_THREADS": "OpenBLAS's thread count, for pthreads and OpenMP builds alike",
    "OPENBLAS_L2_SIZE": "overrides the L2 cache size OpenBLAS derives its GEMM blocking from",
    "OPENBLAS_NUM_THREADS": "OpenBLAS's thread count",
    "VECLIB_MAXIMUM_THREADS": "Apple Accelerate's thread count",
}

#: CPU flags that code is dispatched on: SIMD and the arithmetic extensions BLAS and NumPy kernels test for
#: (x86 names from /proc/cpuinfo ``flags``, Arm names from ``Features``). Flags about security, virtualization or
#: power are left out: they change no result, and would make identical machines differ.
SIMD_FLAG = re.compile(
    r"(sse\w*|ssse3|pni|avx\w*|amx\w*|fma\w*|f16c|xop|bmi\d|abm|lzcnt|popcnt|movbe|adx|aes|vaes|pclmulqdq"
    r"|vpclmulqdq|gfni|sha_ni"  # x86
    r"|fp|fphp|asimd\w*|sve\w*|sme(?!p$)\w*|i8mm|bf16|frint|fcma|jscvt|dotprod)")  # Arm

#: MKL's code branches (``mkl_cbwr_get_auto_branch``, mkl_service.h): the MKL counterpart of OpenBLAS's core.
MKL_BRANCHES = {3: "COMPATIBLE", 4: "SSE2", 5: "SSE3", 6: "SSSE3", 7: "SSE4_1", 8: "SSE4_2", 9: "AVX", 10: "AVX2",
                11: "AVX512_MIC", 12: "AVX512", 13: "AVX512_MIC_E1", 14: "AVX512_E1"}


def numeric_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``env.NAME`` for each variable of :data:`CPU_NUMERIC_ENV`, ``<unset>`` where it is not set."""
    return {f"env.{name}": environ.get(name, UNSET) for name in sorted(CPU_NUMERIC_ENV)}


def simd_flags(flags: str) -> str:
    """The dispatch-relevant subset of a flag list, sorted, space-separated ("none" when empty)."""
    kept = sorted({f for f in flags.split() if SIMD_FLAG.fullmatch(f)})
    return " ".join(kept) or "none"


def parse_cpuinfo(text: str) -> dict[str, str]:
    """The first processor of a Linux /proc/cpuinfo: x86 (``vendor_id``, ``cpu family``, ``model``, ``model name``,
    ``flags``) or Arm (``CPU implementer``, ``CPU architecture``, ``CPU part``, ``Features``)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor's block ends; the others repeat it
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())

    def first(*keys: str) -> str:
        return next((fields[k] for k in keys if fields.get(k)), UNKNOWN)

    flags = fields.get("flags") or fields.get("Features")
    return {"cpu.vendor": first("vendor_id", "CPU implementer"),
            "cpu.family": first("cpu family", "CPU architecture"),
            "cpu.model_number": first("model", "CPU part"),
            "cpu.model": first("model name", "Hardware", "Processor"),
            **({"cpu.flags": simd_flags(flags)} if flags is not None else {})}


def parse_windows_processor(text: str) -> dict[str, str]:
    """Windows' ``platform.processor()``: ``Intel64 Family 6 Model 158 Stepping 10, GenuineIntel``."""
    match = re.search(r"Family (\d+) Model (\d+).*?,\s*(\S+)", text)
    if match is None:
        return {}
    family, model, vendor = match.groups()
    return {"cpu.vendor": vendor, "cpu.family": family, "cpu.model_number": model}


def parse_sysctl(text: str) -> dict[str, str]:
    """macOS ``sysctl machdep.cpu hw.cpufamily``: Intel Macs report vendor, family, model and features; Apple
    silicon reports its brand string and ``hw.cpufamily`` (one value per core design)."""
    values = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if v}
    out = {"cpu.vendor": values.get("machdep.cpu.vendor", "Apple" if "hw.cpufamily" in values else UNKNOWN),
           "cpu.family": values.get("machdep.cpu.family", values.get("hw.cpufamily", UNKNOWN)),
           "cpu.model_number": values.get("machdep.cpu.model", UNKNOWN)}
    if values.get("machdep.cpu.brand_string"):
        out["cpu.model"] = values["machdep.cpu.brand_string"]
    features = " ".join(values.get(k, "") for k in ("machdep.cpu.features", "machdep.cpu.leaf7_features"))
    if features.strip():
        out["cpu.flags"] = simd_flags(features.lower().replace(".", "_"))
    return out


def _numpy_cpu_features() -> tuple[Any, str]:
    """NumPy's CPU feature table and its SIMD targets on this CPU: the baseline it was compiled for and the dispatch
    targets this CPU has (its vectorized exp, tanh, sin, ... give other last bits on other targets)."""
    try:
        umath: Any = importlib.import_module("numpy._core._multiarray_umath")
    except ImportError:  # numpy < 2
        umath = importlib.import_module("numpy.core._multiarray_umath")
    try:
        features = dict(umath.__cpu_features__)
        found = [t for t in umath.__cpu_dispatch__ if features.get(t)]
        return features, " ".join([*umath.__cpu_baseline__, *found]) or "none"
    except AttributeError:
        return {}, UNKNOWN


def cpu_identity() -> dict[str, str]:
    """``cpu.vendor``, ``cpu.family``, ``cpu.model_number``, ``cpu.model`` (the name), ``cpu.flags`` and
    ``cpu.simd``: from /proc/cpuinfo on Linux, sysctl on macOS, ``platform.processor()`` on Windows; where a part
    cannot be read it is "unknown", and the flags are NumPy's CPU feature table."""
    features, simd = _numpy_cpu_features()
    out = {"cpu.vendor": UNKNOWN, "cpu.family": UNKNOWN, "cpu.model_number": UNKNOWN,
           "cpu.model": platform.processor() or UNKNOWN}
    system = platform.system()
    try:
        if system == "Linux":
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                out.update({k: v for k, v in parse_cpuinfo(f.read()).items() if v != UNKNOWN or k not in out})
        elif system == "Darwin":
            done = subprocess.run(["sysctl", "machdep.cpu", "hw.cpufamily"], capture_output=True, text=True,
                                  timeout=10, check=False)
            out.update(parse_sysctl(done.stdout))
        elif system == "Windows":
            out.update(parse_windows_processor(platform.processor()))
    except (OSError, subprocess.SubprocessError):
        pass  # the fallbacks stay; what could not be read is recorded as unknown
    if "cpu.flags" not in out:
        out["cpu.flags"] = " ".join(sorted(k.lower() for k, on in features.items() if on)) or "none"
    out["cpu.simd"] = simd
    return out


def _inside(path: str, directories: list[str]) -> bool:
    real = os.path.realpath(path)
    return any(real.startswith(d + os.sep) for d in directories)


def _mkl_branch(controller: Any) -> str:
    """The code branch MKL would run on this CPU (its ``mkl_cbwr_get_auto_branch``), or "unknown"."""
    try:
        fn = controller.dynlib.mkl_cbwr_get_auto_branch
        code = int(fn())
    except (AttributeError, OSError, ValueError):
        return UNKNOWN
    return MKL_BRANCHES.get(code, f"branch {code}")


def blas_runtime() -> dict[str, str]:
    """What threadpoolctl finds of NumPy's BLAS at run time: ``blas.api`` (openblas, mkl, blis, ...),
    ``blas.version``, ``blas.core`` (the kernel OpenBLAS or BLIS picked for this CPU, MKL's code branch),
    ``blas.threading`` (pthreads, openmp, intel, ...) and ``blas.threads``. NumPy's own library is the one inside
    its installation (a wheel's bundled OpenBLAS); where none is (conda, a system BLAS), every BLAS loaded in the
    process is listed, joined with " + ". "unknown" where none is found (Apple Accelerate is not visible)."""
    from threadpoolctl import ThreadpoolController  # lazy: only a fingerprint needs it; the runtime imports this module

    numpy_dir = os.path.realpath(os.path.dirname(np.__file__))
    here = [numpy_dir, numpy_dir + ".libs", os.path.join(numpy_dir, ".dylibs")]
    found = [(c, c.info()) for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
    found = [(c, i) for c, i in found if _inside(i["filepath"], here)] or found
    found.sort(key=lambda ci: (str(ci[1]["internal_api"]), os.path.basename(ci[1]["filepath"])))

    def field(key: str) -> str:
        values = [str(info.get(key) or UNKNOWN) for _, info in found]
        return " + ".join(values) or UNKNOWN

    cores = [_mkl_branch(c) if info["internal_api"] == "mkl" else str(info.get("architecture") or UNKNOWN)
             for c, info in found]
    return {"blas.api": field("internal_api"), "blas.version": field("version"),
            "blas.core": " + ".join(cores) or UNKNOWN, "blas.threading": field("threading_layer"),
            "blas.threads": field("num_threads")}


def _blas_build() -> str:
    """The BLAS NumPy was built against (name and version, from its build configuration)."""
    try:
        config = np.show_config(mode="dicts")
        build = config["Build Dependencies"]["blas"]
        return f"{build.get('name', UNKNOWN)} {build.get('version', '')}".strip()
    except Exception:  # numpy < 1.25 has no mode="dicts"; blas.* and the version identify the library then
        return UNKNOWN


@functools.lru_cache(maxsize=1)
def _read_once() -> tuple[tuple[str, str], ...]:
    fields = {"backend": "cpu", "cpu.count": str(os.cpu_count()), "blas": _blas_build(),
              **cpu_identity(), **blas_runtime(), **numeric_env(os.environ)}
    return tuple(sorted(fields.items()))


def cpu_fingerprint() -> dict[str, str]:
    """The CPU backend's fingerprint, read once per process (see the module's docstring); a new dict each call."""
    return dict(_read_once())

"""The CPU fingerprint records what picks code at run time: the BLAS library, its version, the kernel it chose
(``blas.core``), its threading; the CPU's vendor, family, model and dispatch flags; the variables that steer them.
Read once per process."""

from __future__ import annotations

import importlib
import platform
from typing import Any

import pytest
from threadpoolctl import threadpool_info

from reprobuild.kernels.backend import get_backend
from reprobuild.kernels.cpu_fingerprint import (
    CPU_NUMERIC_ENV,
    parse_cpuinfo,
    parse_sysctl,
    parse_windows_processor,
    simd_flags,
)
from tests.kernels.blas_cores import fingerprint_with_core, other_core

#: NumPy's names for CPU features, and the /proc/cpuinfo flag of each (an independent view of the same CPU).
NUMPY_TO_FLAG = {"SSE2": "sse2", "SSE41": "sse4_1", "SSE42": "sse4_2", "AVX": "avx", "F16C": "f16c", "FMA3": "fma",
                 "AVX2": "avx2", "AVX512F": "avx512f", "AVX512CD": "avx512cd", "AVX512BW": "avx512bw",
                 "AVX512DQ": "avx512dq", "AVX512VL": "avx512vl"}


def _numpy_features() -> dict[str, bool]:
    try:
        umath: Any = importlib.import_module("numpy._core._multiarray_umath")
    except ImportError:  # numpy < 2
        umath = importlib.import_module("numpy.core._multiarray_umath")
    return dict(umath.__cpu_features__)


def test_the_fingerprint_records_the_blas_kernel_and_the_cpu() -> None:
    fp = get_backend("cpu").fingerprint()
    numpy_blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
    assert numpy_blas, "NumPy's BLAS is loaded, so threadpoolctl sees it"
    apis = {i["internal_api"] for i in numpy_blas}
    assert set(fp["blas.api"].split(" + ")) <= apis
    if fp["blas.api"] == "openblas":
        info = next(i for i in numpy_blas if i["internal_api"] == "openblas")
        assert fp["blas.core"] == info["architecture"] and fp["blas.core"] not in ("", "unknown")
        assert fp["blas.version"] == info["version"] and fp["blas.version"] in fp["blas"]
        assert fp["blas.threading"] in ("pthreads", "openmp", "disabled")
    assert int(fp["blas.threads"].split(" + ")[0]) >= 1
    assert set(fp) >= {f"env.{name}" for name in ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS",
                                                  "OMP_NUM_THREADS", "MKL_NUM_THREADS", "MKL_CBWR",
                                                  "MKL_ENABLE_INSTRUCTIONS", "MKL_DEBUG_CPU_TYPE", "MKL_DYNAMIC",
                                                  "NPY_DISABLE_CPU_FEATURES", "NPY_ENABLE_CPU_FEATURES")}
    assert set(fp) >= {f"env.{name}" for name in CPU_NUMERIC_ENV}
    assert fp["cpu.simd"] not in ("", "unknown")
    if platform.system() == "Linux" and platform.machine() in ("x86_64", "AMD64"):
        assert fp["cpu.vendor"] in ("GenuineIntel", "AuthenticAMD", "HygonGenuine", "CentaurHauls", "Shanghai")
        assert fp["cpu.family"].isdigit() and fp["cpu.model_number"].isdigit()
        flags = set(fp["cpu.flags"].split())
        for numpy_name, flag in NUMPY_TO_FLAG.items():
            if numpy_name in _numpy_features():
                assert (flag in flags) == _numpy_features()[numpy_name], (numpy_name, flag, fp["cpu.flags"])


def test_the_fingerprint_is_read_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenBLAS reads OPENBLAS_CORETYPE when it is loaded: a value set later changes no kernel, and must not be
    recorded as if it had."""
    backend = get_backend("cpu")
    before = backend.fingerprint()
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Prescott")
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    after = backend.fingerprint()
    assert after == before
    after["blas.core"] = "edited"
    assert backend.fingerprint() == before  # each call gets its own copy


@pytest.mark.slow
def test_another_openblas_core_is_another_fingerprint() -> None:
    """The issue's machine: same versions, same CPU, OPENBLAS_CORETYPE=Haswell; the fingerprint tells them apart."""
    core = other_core()
    here = get_backend("cpu").fingerprint()
    there = fingerprint_with_core(core)
    assert there["blas.core"].lower() == core.lower() != here["blas.core"].lower()
    assert there["env.OPENBLAS_CORETYPE"] == core
    same = {k for k in here if here[k] == there.get(k)}
    assert set(here) - same == {"blas.core", "env.OPENBLAS_CORETYPE"}, {k: (here[k], there.get(k)) for k in here}


def test_proc_cpuinfo_of_an_x86_machine() -> None:
    text = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
            "model name\t: AMD EPYC 9R14 96-Core Processor\nstepping\t: 1\n"
            "flags\t\t: fpu sse sse2 pni ssse3 fma sse4_1 sse4_2 avx f16c avx2 smep bmi2 avx512f avx512bw "
            "avx512_bf16 hypervisor rdrand\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\n")
    assert parse_cpuinfo(text) == {
        "cpu.vendor": "AuthenticAMD", "cpu.family": "25", "cpu.model_number": "17",
        "cpu.model": "AMD EPYC 9R14 96-Core Processor",
        "cpu.flags": "avx avx2 avx512_bf16 avx512bw avx512f bmi2 f16c fma pni sse sse2 sse4_1 sse4_2 ssse3"}


def test_proc_cpuinfo_of_an_arm_machine() -> None:
    text = ("processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd evtstrm aes pmull sha1 crc32 atomics fphp "
            "asimdhp cpuid asimddp sve sve2 i8mm bf16 paca\nCPU implementer\t: 0x41\nCPU architecture: 8\n"
            "CPU variant\t: 0x0\nCPU part\t: 0xd4f\nCPU revision\t: 1\n")
    assert parse_cpuinfo(text) == {
        "cpu.vendor": "0x41", "cpu.family": "8", "cpu.model_number": "0xd4f", "cpu.model": "unknown",
        "cpu.flags": "aes asimd asimddp asimdhp bf16 fp fphp i8mm sve sve2"}


def test_the_portable_fallbacks_parse_windows_and_macos() -> None:
    assert parse_windows_processor("Intel64 Family 6 Model 158 Stepping 10, GenuineIntel") == {
        "cpu.vendor": "GenuineIntel", "cpu.family": "6", "cpu.model_number": "158"}
    assert parse_windows_processor("") == {}
    intel = ("machdep.cpu.vendor: GenuineIntel\nmachdep.cpu.family: 6\nmachdep.cpu.model: 158\n"
             "machdep.cpu.brand_string: Intel(R) Core(TM) i7-8850H CPU @ 2.60GHz\n"
             "machdep.cpu.features: FPU SSE SSE2 SSE3 SSSE3 FMA SSE4.1 SSE4.2 AVX1.0 F16C\n"
             "machdep.cpu.leaf7_features: SMEP BMI1 AVX2 BMI2\n")
    assert parse_sysctl(intel) == {
        "cpu.vendor": "GenuineIntel", "cpu.family": "6", "cpu.model_number": "158",
        "cpu.model": "Intel(R) Core(TM) i7-8850H CPU @ 2.60GHz",
        "cpu.flags": "avx1_0 avx2 bmi1 bmi2 f16c fma sse sse2 sse3 sse4_1 sse4_2 ssse3"}
    apple = "machdep.cpu.brand_string: Apple M2\nhw.cpufamily: -634136515\n"
    assert parse_sysctl(apple) == {"cpu.vendor": "Apple", "cpu.family": "-634136515", "cpu.model_number": "unknown",
                                   "cpu.model": "Apple M2"}


def test_only_dispatch_flags_are_kept() -> None:
    assert simd_flags("smep smap hypervisor rdrand avx512f sme sme2 sha_ni") == "avx512f sha_ni sme sme2"
    assert simd_flags("hypervisor") == "none"

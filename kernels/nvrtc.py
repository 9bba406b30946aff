"""Compile the ``.cu`` files beside the tactic modules with NVRTC, with an explicit option list.

CuPy's ``RawModule`` silently appends options of its own (``-ftz=true``, an arch flag, and more); to record
exactly what produced each binary we call NVRTC ourselves and load the cubin through CuPy. NVRTC output is
deterministic for the same source, options and NVRTC version, so the digest of each kernel symbol's own sections of
the cubin (``cubin.py``) is recorded too.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from reprobuild.core.digest import digest_of, sha256_hex
from reprobuild.core.errors import BuildError, ReprobuildError
from reprobuild.core.fileio import atomic_write
from reprobuild.kernels.cubin import symbol_digests

#: The NVRTC options every kernel is compiled with (the arch flag is added per device). Spelled out so that
#: the defaults of a future NVRTC cannot change what is built without the manifest showing it.
BASE_OPTIONS: tuple[str, ...] = (
    "--std=c++17",
    "--fmad=true",
    "--ftz=false",
    "--prec-div=true",
    "--prec-sqrt=true",
    "--device-as-default-execution-space",
)

#: The headers a package ``.cu`` file may ``#include "..."`` (NVRTC is given their text; there is no include path).
HEADERS: tuple[str, ...] = ("dtype.cuh", "epilogue.cuh", "reduce.cuh")
#: The define that compiles a file written on ``elem_t`` (``dtype.cuh``) for each element type.
DTYPE_DEFINES: dict[str, tuple[str, ...]] = {
    "float32": (), "float16": ("REPRO_HALF=1",), "bfloat16": ("REPRO_BF16=1",)}


_SOURCE_CACHE: dict[str, bytes] = {}
_MODULE_CACHE: dict[tuple[str, str, int], CompiledModule] = {}
_LOCK = threading.Lock()


def read_source(filename: str) -> bytes:
    """The bytes of a file in the ``reprobuild.kernels`` package (a ``.cu`` source or a family module)."""
    with _LOCK:
        if filename not in _SOURCE_CACHE:
            _SOURCE_CACHE[filename] = resources.files("reprobuild.kernels").joinpath(filename).read_bytes()
        return _SOURCE_CACHE[filename]


def integer_defines(filename: str) -> dict[str, int]:
    """The ``#define NAME <integer>`` lines of a package ``.cu`` file: a tactic module takes a kernel's compile-time
    sizes (a GEMM's tiles) from the one file that compiles with them, rather than keeping a copy."""
    text = read_source(filename).decode("utf-8")
    return {m[1]: int(m[2]) for m in re.finditer(r"^#define ([A-Za-z_]\w*) +([0-9]+)\b", text, re.MULTILINE)}


def compile_options(compute_capability: str) -> tuple[str, ...]:
    return (*BASE_OPTIONS, f"--gpu-architecture=sm_{compute_capability}")


@dataclass(frozen=True)
class CompiledModule:
    filename: str
    options: tuple[str, ...]
    cubin_sha256: str
    module: Any
    cubin: bytes = field(default=b"", repr=False)

    def function(self, name: str) -> Any:
        return self.module.get_function(name)

    def symbol_sha256(self, name: str) -> str:
        """The digest of kernel ``name``'s own sections of the cubin (``cubin.symbol_digest``)."""
        return symbol_digests(self.cubin, [name])[name]


def package_headers() -> tuple[tuple[str, str], ...]:
    """(name, text) of every header a package or generated kernel may include."""
    return tuple((name, read_source(name).decode("utf-8")) for name in HEADERS)


def _compile(filename: str, source: str, options: tuple[str, ...],
             headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    from cupy_backends.cuda.libs import nvrtc  # lazy: part of CuPy, optional (the cuda extras)

    prog = nvrtc.createProgram(source, filename, tuple(h.encode() for _, h in headers),
                               tuple(n.encode() for n, _ in headers))
    try:
        try:
            nvrtc.compileProgram(prog, list(options))
        except nvrtc.NVRTCError as exc:
            log = nvrtc.getProgramLog(prog)
            raise BuildError(
                f"NVRTC failed to compile {filename} with options {' '.join(options)}:\n{log}\n({exc})"
            ) from None
        return bytes(nvrtc.getCUBIN(prog))
    finally:
        nvrtc.destroyProgram(prog)


def cache_directory() -> str | None:
    """Where compiled cubins are kept between processes: ``$REPROBUILD_CACHE_DIR/nvrtc`` (default
    ``~/.cache/reprobuild/nvrtc``); ``REPROBUILD_CACHE_DIR=off`` disables it. The cache never changes a result:
    its key covers the source, the options, the NVRTC version and the architecture, and each entry carries the
    sha256 of its cubin, checked on every load."""
    root = os.environ.get("REPROBUILD_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "reprobuild")
    return None if root.lower() == "off" else os.path.join(root, "nvrtc")


def _cached_cubin(filename: str, source: str, options: tuple[str, ...],
                  headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    from cupy_backends.cuda.libs import nvrtc  # lazy: part of CuPy, optional (the cuda extras)

    directory = cache_directory()
    if directory is None:
        return _compile(filename, source, options, headers)
    key = digest_of({"source": sha256_hex(source.encode()), "options": list(options),
                     "nvrtc": list(nvrtc.getVersion()), "file": filename,
                     "headers": {n: sha256_hex(h.encode()) for n, h in headers}})
    path = os.path.join(directory, f"{key}.cubin")
    try:
        with open(path, "rb") as f:
            stored = f.read()
        digest, cubin = stored[:64].decode("ascii", errors="replace"), stored[64:]
        if sha256_hex(cubin) == digest:
            return cubin
    except OSError:
        pass
    cubin = _compile(filename, source, options, headers)
    with contextlib.suppress(ReprobuildError, OSError):  # an unwritable cache only costs a later compile
        os.makedirs(directory, exist_ok=True)  # atomic_write creates no directories
        atomic_write(path, sha256_hex(cubin).encode("ascii") + cubin)
    return cubin


def load_module(filename: str, compute_capability: str, device_id: int,
                dtype: str = "float32") -> CompiledModule:
    """Compile (once per process, device and option list; cached on disk between processes) and load a ``.cu``
    file of this package, for tensors of ``dtype`` (a file written on ``dtype.cuh``'s ``elem_t``; the others
    ignore it)."""
    if dtype not in DTYPE_DEFINES:
        raise BuildError(f"{filename} has no {dtype} build; the package kernels are built for "
                         f"{', '.join(DTYPE_DEFINES)}")
    return load_source(filename, read_source(filename).decode("utf-8"), compute_capability, device_id,
                       DTYPE_DEFINES[dtype], package_headers())


def load_source(name: str, source: str, compute_capability: str, device_id: int,
                defines: tuple[str, ...] = (), headers: tuple[tuple[str, str], ...] = ()) -> CompiledModule:
    """Compile and load CUDA source text (a package file's, or one generated from a layer's attributes, such as
    a fused elementwise kernel); ``name`` is what compile errors and the cache call it, ``headers`` the
    (name, text) of the files it may include."""
    options = (*compile_options(compute_capability), *(f"-D{d}" for d in defines))
    key = (name, digest_of({"source": sha256_hex(source.encode()), "options": list(options),
                            "headers": {n: sha256_hex(h.encode()) for n, h in headers}}), device_id)
    with _LOCK:
        cached = _MODULE_CACHE.get(key)
    if cached is not None:
        return cached
    from cupy.cuda import function  # lazy: part of CuPy, optional (the cuda extras)

    cubin = _cached_cubin(name, source, options, headers)
    module = function.Module()
    module.load(cubin)
    compiled = CompiledModule(name, options, sha256_hex(cubin), module, cubin)
    with _LOCK:
        return _MODULE_CACHE.setdefault(key, compiled)

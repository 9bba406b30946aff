"""Compile kernel sources with the real NVRTC library (the ``nvidia-cuda-nvrtc`` wheel; no GPU needed), with
``kernels/nvrtc.py``'s options and headers. Run in its own process by ``test_nvrtc_compile.py``, so that loading
NVRTC (an LLVM with its own signal handlers and threads) never touches the test process:

    python -m tests.kernels.nvrtc_compile package 90     # every package .cu, each dtype, for sm_90
    python -m tests.kernels.nvrtc_compile generated 90   # the generated kernels of every test case
    python -m tests.kernels.nvrtc_compile broken 90      # a source NVRTC must refuse (the check checks itself)

Prints one JSON object: the number of sources compiled and the failures (name and NVRTC's log).
"""

from __future__ import annotations

import ctypes
import glob
import json
import os
import sys
from collections.abc import Iterator

from reprobuild.kernels import fused_elementwise, logic, nvrtc
from reprobuild.registry import default_registry


def library_path() -> str | None:
    """Where the wheel put libnvrtc (None: not installed), found without loading it."""
    import importlib.util

    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations or []) if spec else []:
        for path in sorted(glob.glob(os.path.join(root, "cu*", "lib", "libnvrtc.so*"))):
            if "builtins" not in path:
                return path
    return None


def compile_errors(name: str, source: str, options: tuple[str, ...],
                   headers: tuple[tuple[str, str], ...]) -> str | None:
    """NVRTC's log when it refuses ``source``, else None."""
    library = ctypes.CDLL(library_path() or "libnvrtc.so")
    program = ctypes.c_void_p()
    names = (ctypes.c_char_p * len(headers))(*[n.encode() for n, _ in headers])
    texts = (ctypes.c_char_p * len(headers))(*[t.encode() for _, t in headers])
    assert library.nvrtcCreateProgram(ctypes.byref(program), source.encode(), name.encode(), len(headers), texts,
                                      names) == 0
    try:
        flags = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
        status = library.nvrtcCompileProgram(program, len(options), flags)
        size = ctypes.c_size_t()
        library.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        library.nvrtcGetProgramLog(program, log)
        return None if status == 0 else log.value.decode(errors="replace")
    finally:
        library.nvrtcDestroyProgram(ctypes.byref(program))


def _package_sources() -> Iterator[tuple[str, str, tuple[str, ...]]]:
    here = os.path.dirname(nvrtc.__file__)
    for path in sorted(glob.glob(os.path.join(here, "*.cu"))):
        name = os.path.basename(path)
        for dtype, defines in sorted(nvrtc.DTYPE_DEFINES.items()):
            yield f"{name}[{dtype}]", nvrtc.read_source(name).decode("utf-8"), tuple(f"-D{d}" for d in defines)


def _generated_sources() -> Iterator[tuple[str, str, tuple[str, ...]]]:
    from tests.kernels.pin_tactics import hand_written_cases, op_cases

    registry = default_registry()
    tactics = {t.family: t for t in registry.all() if t.family in ("logic", "elementwise_fused")}
    seen: set[str] = set()
    for cases in (hand_written_cases(), op_cases()):
        for case_id, spec, _ in cases:
            for family, tactic in sorted(tactics.items()):
                if spec.op not in tactic.ops or tactic.ineligibility(spec) is not None:
                    continue
                if family == "logic":
                    source = logic.generate_source(spec)
                else:
                    out = spec.outputs[0]
                    source = fused_elementwise.generate_source(fused_elementwise.layer_program(spec), out.dtype,
                                                               out.shape, [s.shape for s in spec.inputs])
                if source not in seen:
                    seen.add(source)
                    yield f"{family} on {case_id}", source, ()


def main(argv: list[str]) -> int:
    what, arch = argv
    options = nvrtc.compile_options(arch)
    if what == "package":
        sources = [(n, src, (*options, *d)) for n, src, d in _package_sources()]
    elif what == "generated":
        sources = [(n, src, options) for n, src, _ in _generated_sources()]
    else:
        sources = [("broken.cu", 'extern "C" __global__ void f(float* x) { x[0] = not_declared; }', options)]
    failures = [{"name": n, "log": log} for n, src, o in sources
                if (log := compile_errors(n, src, o, nvrtc.package_headers() if what != "broken" else ())) is not None]
    families = sorted({n.split(" ")[0] for n, _, _ in sources})
    print(json.dumps({"compiled": len(sources), "families": families, "failures": failures}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Every CUDA kernel source compiles with NVRTC, on any machine: NVRTC is a library (the ``nvidia-cuda-nvrtc``
wheel of the dev extra), it needs no GPU. Each package ``.cu`` file for each element type, and the generated
kernels of every case the generated tactics take, with exactly the options and headers ``kernels/nvrtc.py`` uses,
for an H100 (sm_90) and an A100 (sm_80). A GPU host then still has to run them (the ``gpu`` tests); this catches
what NVRTC refuses (a missing declaration, a header it does not have) before a device is needed."""

from __future__ import annotations

import ctypes
import glob
import os
from collections.abc import Iterator

import numpy as np
import pytest

from reprobuild.kernels import fused_elementwise, logic, nvrtc
from reprobuild.registry import default_registry


def _library() -> ctypes.CDLL | None:
    try:
        import nvidia  # the namespace package of NVIDIA's wheels
    except ImportError:
        return None
    for root in nvidia.__path__:
        for path in sorted(glob.glob(os.path.join(root, "cu*", "lib", "libnvrtc.so*"))):
            if "builtins" not in path:
                return ctypes.CDLL(path)
    return None


LIBRARY = _library()
pytestmark = pytest.mark.skipif(LIBRARY is None, reason="NVRTC is not installed (pip install -e '.[dev]' on "
                                                        "Linux x86-64 brings the nvidia-cuda-nvrtc wheel)")


def compile_errors(name: str, source: str, options: tuple[str, ...],
                   headers: tuple[tuple[str, str], ...]) -> str | None:
    """NVRTC's log when it refuses ``source``, else None."""
    assert LIBRARY is not None
    program = ctypes.c_void_p()
    names = (ctypes.c_char_p * len(headers))(*[n.encode() for n, _ in headers])
    texts = (ctypes.c_char_p * len(headers))(*[t.encode() for _, t in headers])
    assert LIBRARY.nvrtcCreateProgram(ctypes.byref(program), source.encode(), name.encode(), len(headers), texts,
                                      names) == 0
    try:
        flags = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
        status = LIBRARY.nvrtcCompileProgram(program, len(options), flags)
        size = ctypes.c_size_t()
        LIBRARY.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        LIBRARY.nvrtcGetProgramLog(program, log)
        return None if status == 0 else log.value.decode(errors="replace")
    finally:
        LIBRARY.nvrtcDestroyProgram(ctypes.byref(program))


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


@pytest.mark.parametrize("arch", ["90", "80"])
def test_every_package_kernel_compiles_with_nvrtc(arch: str) -> None:
    failures = [f"{what}:\n{log}" for what, source, defines in _package_sources()
                if (log := compile_errors(what, source, (*nvrtc.compile_options(arch), *defines),
                                          nvrtc.package_headers())) is not None]
    assert not failures, "\n\n".join(failures)


def test_every_generated_kernel_of_the_cases_compiles_with_nvrtc() -> None:
    sources = list(_generated_sources())
    assert len(sources) > 20 and np.unique([what.split(" ")[0] for what, _, _ in sources]).size == 2
    failures = [f"{what}:\n{log}" for what, source, defines in sources
                if (log := compile_errors(what, source, nvrtc.compile_options("90"), nvrtc.package_headers()))
                is not None]
    assert not failures, "\n\n".join(failures)


def test_a_source_nvrtc_refuses_is_reported_with_its_log() -> None:
    log = compile_errors("broken.cu", 'extern "C" __global__ void f(float* x) { x[0] = not_declared; }',
                         nvrtc.compile_options("90"), ())
    assert log is not None and "not_declared" in log

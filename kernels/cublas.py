"""cuBLAS through its C API (ctypes), one handle per stream with an explicit workspace.

CuPy's cuBLAS wrappers set the handle's stream on every call and refuse to do so while a stream is being
captured, so nothing that goes through them can be part of a CUDA graph. cuBLAS itself captures fine when each
handle has one stream and a workspace of its own (``cublasSetWorkspace``): no allocation happens during the
call, and with one stream per workspace cuBLAS promises bitwise-reproducible results for the same toolkit,
architecture and SM count. So an execution context owns a handle bound to its stream, with a workspace carved
from its scratch memory; the builder and tests get one per stream from :meth:`CudaBackend.blas_handle`.

Nothing here is called through CuPy's high-level ``matmul``; the library is the one CuPy loaded.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

from reprobuild.core.errors import BackendUnavailableError, BuildError
from reprobuild.kernels.capture import outside_capture

#: Bytes of workspace each handle gets: what NVIDIA recommends for Hopper (32 MiB); less makes cuBLAS pick other
#: kernels, so the size is part of what decides the numerics and is recorded with the engine's memory.
WORKSPACE_BYTES = 32 * 1024 * 1024

_DATA_TYPES = {"float32": 0, "float64": 1, "float16": 2, "bfloat16": 14}
#: cublasComputeType_t: strict float32, float32 with TF32 tensor cores, float64.
_COMPUTE_TYPES = {"fp32": 68, "tf32": 77, "fp64": 70}
_CUBLAS_GEMM_DEFAULT = -1
_POINTER_MODE_HOST = 0
_DEFAULT_MATH = 0


class CublasError(BuildError):
    """A cuBLAS call returned an error status."""


def _library_path() -> str:
    """The path of the libcublas CuPy loaded (so that one copy of cuBLAS serves both)."""
    import cupy  # lazy: optional (the cuda extras); only the CUDA backend needs it

    cupy.cuda.device.get_cublas_handle()  # makes CuPy load its cuBLAS
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
        for line in maps:
            path = line.rsplit(" ", 1)[-1].strip()
            if "/libcublas.so" in path:
                return path
    raise BackendUnavailableError("CuPy's cuBLAS library is not mapped into this process; cannot call cuBLAS")


@functools.cache
def library() -> Any:
    lib = ctypes.CDLL(_library_path())
    vp, i, ll = ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong
    lib.cublasCreate_v2.argtypes = [ctypes.POINTER(vp)]
    lib.cublasDestroy_v2.argtypes = [vp]
    lib.cublasSetStream_v2.argtypes = [vp, vp]
    lib.cublasSetWorkspace_v2.argtypes = [vp, vp, ctypes.c_size_t]
    lib.cublasSetPointerMode_v2.argtypes = [vp, i]
    lib.cublasSetMathMode.argtypes = [vp, i]
    lib.cublasGemmStridedBatchedEx.argtypes = [
        vp, i, i, i, i, i, vp, vp, i, i, ll, vp, i, i, ll, vp, vp, i, i, ll, i, i, i]
    for name in ("cublasCreate_v2", "cublasDestroy_v2", "cublasSetStream_v2", "cublasSetWorkspace_v2",
                 "cublasSetPointerMode_v2", "cublasSetMathMode", "cublasGemmStridedBatchedEx"):
        getattr(lib, name).restype = i
    return lib


def _check(status: int, what: str) -> None:
    if status != 0:
        raise CublasError(f"cuBLAS {what} failed with status {status}")


class BlasHandle:
    """A cuBLAS handle bound to one stream and one workspace (``workspace_ptr``, ``WORKSPACE_BYTES`` long)."""

    def __init__(self, stream_ptr: int, workspace_ptr: int, workspace_bytes: int = WORKSPACE_BYTES,
                 keep: Any = None) -> None:
        lib = library()
        handle = ctypes.c_void_p()
        _check(lib.cublasCreate_v2(ctypes.byref(handle)), "create")
        self.handle = handle
        self._keep = keep  # the workspace's owner, when the handle allocated it
        _check(lib.cublasSetStream_v2(handle, ctypes.c_void_p(stream_ptr)), "set stream")
        _check(lib.cublasSetWorkspace_v2(handle, ctypes.c_void_p(workspace_ptr), workspace_bytes), "set workspace")
        _check(lib.cublasSetPointerMode_v2(handle, _POINTER_MODE_HOST), "set pointer mode")
        _check(lib.cublasSetMathMode(handle, _DEFAULT_MATH), "set math mode")

    def bind_gemm(self, g: Any, a: int, b: int, c: int) -> Any:
        """A call that enqueues the GEMM ``g`` (a :class:`~reprobuild.kernels.launch.GemmLaunch`) with these
        device addresses on this handle's stream (the stream argument is the handle's)."""
        if g.dtype not in _DATA_TYPES or g.compute not in _COMPUTE_TYPES:
            raise CublasError(f"no cuBLAS GEMM for dtype {g.dtype} with compute {g.compute}")
        scalar = ctypes.c_double if g.compute == "fp64" else ctypes.c_float
        alpha, beta = scalar(g.alpha), scalar(g.beta)
        dt = _DATA_TYPES[g.dtype]
        args = (self.handle, int(g.transa), int(g.transb), g.m, g.n, g.k, ctypes.addressof(alpha),
                ctypes.c_void_p(a), dt, g.lda, g.stride_a, ctypes.c_void_p(b), dt, g.ldb, g.stride_b,
                ctypes.addressof(beta), ctypes.c_void_p(c), dt, g.ldc, g.stride_c, g.batch,
                _COMPUTE_TYPES[g.compute], _CUBLAS_GEMM_DEFAULT)
        fn = library().cublasGemmStridedBatchedEx

        def call(stream: Any, _scalars: Any = (alpha, beta)) -> None:
            status = fn(*args)
            if status != 0:
                raise CublasError(f"cublasGemmStridedBatchedEx (m={g.m} n={g.n} k={g.k} batch={g.batch}, "
                                  f"{g.dtype}, {g.compute}) failed with status {status}")

        return call

    def close(self) -> None:
        """Destroy the handle. cublasDestroy synchronizes the device, so it waits until no thread is capturing a
        CUDA graph (a capture elsewhere would be invalidated)."""
        if self.handle:
            handle, self.handle = self.handle, ctypes.c_void_p()
            destroy = library().cublasDestroy_v2
            outside_capture(lambda: destroy(handle))

    def __del__(self) -> None:
        # not contextlib.suppress: at interpreter shutdown module globals may already be None
        try:  # noqa: SIM105
            self.close()
        except Exception:
            pass


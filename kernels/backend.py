"""Backends: where tactics run and how they are timed.

``cpu`` runs NumPy and times with ``perf_counter_ns``. ``cuda`` runs CuPy arrays and NVRTC-compiled kernels on a
dedicated non-blocking stream and times with CUDA events. ``resolve_backend("auto")`` picks ``cuda`` when a
device is usable and says why not otherwise; the choice is recorded in the manifest.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from reprobuild.core.dtypes import np_dtype
from reprobuild.core.errors import BackendUnavailableError, UsageError
from reprobuild.kernels import cublaslt, cudnn_sdpa
from reprobuild.kernels.cpu_fingerprint import cpu_fingerprint
from reprobuild.kernels.cublas import WORKSPACE_BYTES, BlasHandle
from reprobuild.kernels.nvrtc import load_module

BACKENDS = ("cpu", "cuda")

#: Environment variables that change CUDA numerics (TF32, CuPy's CUB/cuTENSOR accelerators, cuBLAS workspaces).
CUDA_NUMERIC_ENV = ("CUBLAS_WORKSPACE_CONFIG", "CUPY_ACCELERATORS", "CUPY_TF32", "NVIDIA_TF32_OVERRIDE")


class Backend(ABC):
    """A place to run tactics. Arrays are NumPy on ``cpu`` and CuPy on ``cuda``; ``xp`` is that module."""

    name: str
    xp: Any

    @abstractmethod
    def asarray(self, host: np.ndarray) -> Any:
        """Copy a host array to this backend (a no-op view on the CPU)."""

    @abstractmethod
    def to_host(self, array: Any, copy: bool = True) -> np.ndarray:
        """An array of this backend on the host, waiting for pending work first: always a new array, unless
        ``copy`` is false and the array already lives on the host."""

    @abstractmethod
    def empty_bytes(self, nbytes: int) -> Any:
        """An uninitialised uint8 buffer of this backend."""

    @abstractmethod
    def upload(self, dst: Any, src: Any) -> None:
        """Copy ``src`` (a host array, or an array of this backend) into the backend array ``dst``."""

    @abstractmethod
    def copy_bytes(self, dst: Any, offset: int, src: Any) -> None:
        """Copy the bytes of the contiguous array ``src`` into the uint8 array ``dst`` at ``offset`` (async on
        CUDA, on the current stream)."""

    @abstractmethod
    def synchronize(self) -> None: ...

    @abstractmethod
    def time_runs(self, fn: Callable[[], None], warmup: int, iterations: int, runs_per_sample: int = 1) -> list[int]:
        """Run ``fn`` ``warmup`` times untimed, then take ``iterations`` samples, each the mean time of
        ``runs_per_sample`` back-to-back runs; nanoseconds per run."""

    def timer(self, kernel: Callable[..., None], inputs: Any, outputs: Any, workspace: Any, warmup: int,
              runs_per_sample: int) -> Callable[[int], list[int]]:
        """Prepare to time ``kernel(inputs, outputs, workspace)``: warm it up, and return ``sample(n)``, which takes
        n samples (nanoseconds per run, each the mean of ``runs_per_sample`` back-to-back runs)."""
        def fn() -> None:
            kernel(inputs, outputs, workspace)

        for _ in range(warmup):
            fn()
        return lambda n: self.time_runs(fn, 0, n, runs_per_sample) if n > 0 else []

    @abstractmethod
    def fingerprint(self) -> dict[str, str]:
        """What of this backend's hardware and software decides numerics (versions, device, env vars)."""

    @contextlib.contextmanager
    def activate(self, stream: Any = None) -> Iterator[None]:
        """Make this backend (and, on CUDA, ``stream`` or the backend's own stream) current for the block."""
        yield

    def new_stream(self) -> Any:
        """A stream for one execution context; ``None`` where the backend has no streams."""
        return None

    def caller_stream(self) -> int | None:
        """The handle of the calling thread's current stream (CuPy's, on this backend's device), which by CuPy's
        convention holds the pending work on a CuPy array the caller passes in; None where there are no streams."""
        return None

    def owned_copies(self, arrays: Mapping[str, Any], stream: Any) -> dict[str, Any]:
        """New arrays with the values of ``arrays`` (outputs of work on ``stream``), complete when this returns and
        belonging to the caller: on CUDA they are allocated on the caller's current stream, where it will use and
        free them (CuPy's memory pool hands a freed block to the next allocation on the stream it was allocated
        on), and written on ``stream`` after the caller's earlier work on that block."""
        return {name: np.array(value, copy=True) for name, value in arrays.items()}

    def wait_for(self, waiter: int, producer: int) -> None:
        """Make the stream ``waiter`` wait, on the device, for the work enqueued so far on ``producer`` (stream
        handles; 1 and 2 are CUDA's legacy and per-thread default streams); nothing where there are no streams.
        The host does not block, and the wait is an ordinary stream operation, so it is never part of a CUDA
        graph captured later on ``waiter``."""
        return None

    def view(self, buffer: Any, offset: int, shape: tuple[int, ...], dtype: str) -> Any:
        """A typed array over ``buffer[offset:]``; how activation memory is carved out of a context's arena.

        The size is computed with Python integers (``np.prod`` in int64 would wrap silently); the engine loader
        caps ranks, dimensions and sizes (``reprobuild.engine.plan``) and keeps every tensor inside the arena, so
        the slice always holds the whole tensor."""
        dt = np_dtype(dtype)
        nbytes = math.prod(shape) * dt.itemsize
        return buffer[offset:offset + nbytes].view(dt).reshape(shape)


def _env(names: tuple[str, ...]) -> dict[str, str]:
    return {f"env.{k}": os.environ.get(k, "<unset>") for k in names}


class CpuBackend(Backend):
    name = "cpu"
    xp = np

    def asarray(self, host: np.ndarray) -> np.ndarray:
        return np.asarray(host, order="C")  # ascontiguousarray would turn a 0-d array into a 1-d one

    def to_host(self, array: Any, copy: bool = True) -> np.ndarray:
        return np.array(array, copy=True) if copy else np.asarray(array)

    def empty_bytes(self, nbytes: int) -> np.ndarray:
        return np.empty(nbytes, dtype=np.uint8)

    def upload(self, dst: Any, src: Any) -> None:
        np.copyto(dst, src, casting="no")

    def copy_bytes(self, dst: Any, offset: int, src: Any) -> None:
        dst[offset:offset + src.nbytes] = src.reshape(-1).view(np.uint8)

    def synchronize(self) -> None:
        return None

    def time_runs(self, fn: Callable[[], None], warmup: int, iterations: int, runs_per_sample: int = 1) -> list[int]:
        for _ in range(warmup):
            fn()
        samples = []
        for _ in range(iterations):
            t0 = time.perf_counter_ns()
            for _ in range(runs_per_sample):
                fn()
            samples.append(round((time.perf_counter_ns() - t0) / runs_per_sample))
        return samples

    def fingerprint(self) -> dict[str, str]:
        """The CPU, NumPy's SIMD targets, the BLAS and the kernel it picked, and the variables they read; read once
        per process (``reprobuild.kernels.cpu_fingerprint``)."""
        return cpu_fingerprint()


class CudaBackend(Backend):
    """CuPy on one device, with a dedicated non-blocking stream for the builder and one per execution context."""

    name = "cuda"

    def __init__(self, device_id: int = 0) -> None:
        import cupy  # lazy: optional (the cuda extras); only the CUDA backend needs it

        self.xp = cupy
        self.device_id = device_id
        self.device = cupy.cuda.Device(device_id)
        with self.device:
            self.stream = cupy.cuda.Stream(non_blocking=True)
        self._local = threading.local()
        self._blas: dict[int, Any] = {}
        props = cupy.cuda.runtime.getDeviceProperties(device_id)
        self.compute_capability = self.device.compute_capability  # e.g. "90"
        self.sm_count = int(props["multiProcessorCount"])
        name = props["name"]
        self.gpu_name = name.decode() if isinstance(name, bytes) else str(name)

    def current_stream(self) -> Any:
        return getattr(self._local, "stream", None) or self.stream

    def blas_handle(self, stream: Any) -> Any:
        """A cuBLAS handle bound to ``stream`` with a workspace of its own, made once per stream (for the
        builder's timing and for tests; an execution context makes its own in its scratch memory)."""
        key = int(stream.ptr)
        with _LOCK:
            handle = self._blas.get(key)
            if handle is None:
                with self.device:  # the workspace and the handle on this backend's GPU
                    workspace = self.xp.empty(WORKSPACE_BYTES, dtype=self.xp.uint8)
                    handle = self._blas[key] = BlasHandle(key, int(workspace.data.ptr), WORKSPACE_BYTES, workspace)
            return handle

    @contextlib.contextmanager
    def activate(self, stream: Any = None) -> Iterator[None]:
        stream = stream if stream is not None else self.current_stream()
        previous = getattr(self._local, "stream", None)
        self._local.stream = stream
        try:
            with self.device, stream:
                yield
        finally:
            self._local.stream = previous

    def new_stream(self) -> Any:
        with self.device:
            return self.xp.cuda.Stream(non_blocking=True)

    def caller_stream(self) -> int | None:
        with self.device:
            return int(self.xp.cuda.get_current_stream().ptr)

    def owned_copies(self, arrays: Mapping[str, Any], stream: Any) -> dict[str, Any]:
        with self.device:  # the caller's current stream on this GPU
            owned = {name: self.xp.empty_like(value) for name, value in arrays.items()}
            self.wait_for(int(stream.ptr), int(self.xp.cuda.get_current_stream().ptr))
        with self.activate(stream):
            for name, value in arrays.items():
                self.xp.copyto(owned[name], value)
            stream.synchronize()
        return owned

    def wait_for(self, waiter: int, producer: int) -> None:
        if waiter == producer:
            return
        runtime = self.xp.cuda.runtime
        with self.device:
            event = self.xp.cuda.Event(block=False, disable_timing=True)  # released once the device has passed it
            runtime.eventRecord(event.ptr, producer)
            runtime.streamWaitEvent(waiter, event.ptr, 0)

    def asarray(self, host: np.ndarray) -> Any:
        with self.activate():
            return self.xp.asarray(np.asarray(host, order="C"))

    def to_host(self, array: Any, copy: bool = True) -> np.ndarray:
        with self.activate():
            stream = self.current_stream()
            out = self.xp.asnumpy(array, stream=stream)
            stream.synchronize()
            return np.asarray(out)

    def empty_bytes(self, nbytes: int) -> Any:
        with self.activate():
            return self.xp.empty(nbytes, dtype=self.xp.uint8)

    def upload(self, dst: Any, src: Any) -> None:
        with self.activate():
            if isinstance(src, self.xp.ndarray):
                self.xp.copyto(dst, src, casting="no")
            else:
                dst.set(np.asarray(src, order="C"), stream=self.current_stream())

    def copy_bytes(self, dst: Any, offset: int, src: Any) -> None:
        if src.nbytes:
            dst[offset:offset + src.nbytes].data.copy_from_device_async(src.data, src.nbytes, self.current_stream())

    def synchronize(self) -> None:
        self.current_stream().synchronize()

    def time_runs(self, fn: Callable[[], None], warmup: int, iterations: int, runs_per_sample: int = 1) -> list[int]:
        cp = self.xp
        with self.activate():
            stream = self.current_stream()
            for _ in range(warmup):
                fn()
            events = [(cp.cuda.Event(), cp.cuda.Event()) for _ in range(iterations)]
            for start, end in events:
                start.record(stream)
                for _ in range(runs_per_sample):
                    fn()
                end.record(stream)
            stream.synchronize()
            return [round(cp.cuda.get_elapsed_time(s, e) * 1e6 / runs_per_sample) for s, e in events]

    def fingerprint(self) -> dict[str, str]:
        cp = self.xp
        from cupy_backends.cuda.libs import nvrtc  # lazy: part of CuPy, optional (the cuda extras)

        with self.device:
            handle = cp.cuda.device.get_cublas_handle()
            cublas_version = cp.cuda.cublas.getVersion(handle)
        major, minor = nvrtc.getVersion()
        return {
            "backend": "cuda",
            "gpu.name": self.gpu_name,
            "gpu.compute_capability": self.compute_capability,
            "gpu.sm_count": str(self.sm_count),
            "cuda.driver": str(cp.cuda.runtime.driverGetVersion()),
            "cuda.runtime": str(cp.cuda.runtime.runtimeGetVersion()),
            "nvrtc": f"{major}.{minor}",
            "cublas": str(cublas_version),
            "cublaslt": cublaslt.version(),
            "cudnn": cudnn_sdpa.version(),
            "cupy": cp.__version__,
            **_env(CUDA_NUMERIC_ENV),
        }


def cuda_unavailable_reason() -> str | None:
    """None when a CUDA device can be used through CuPy; otherwise why not, with the fix."""
    try:
        import cupy  # lazy: optional (the cuda extras); only the CUDA backend needs it
    except ImportError:
        return "CuPy is not installed (install the extra that matches your CUDA: pip install -e '.[cuda13]')"
    except Exception as exc:  # a broken CuPy install raises all sorts of errors at import
        return f"CuPy failed to import: {exc}"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return f"CuPy sees no usable CUDA driver or device: {exc}"
    if count < 1:
        return "no CUDA device is visible (check CUDA_VISIBLE_DEVICES and the driver)"
    return None


_BACKENDS: dict[tuple[str, int], Backend] = {}
_LOCK = threading.Lock()


def device_count() -> int:
    """How many CUDA devices this process sees (0 where CUDA cannot be used)."""
    if cuda_unavailable_reason() is not None:
        return 0
    import cupy  # lazy: optional (the cuda extras); only the CUDA backend needs it

    return int(cupy.cuda.runtime.getDeviceCount())


def check_device(name: str, device: int | None) -> int:
    """``device`` as an index of ``name``'s devices (None: 0); a UsageError for one that does not exist."""
    if device is None:
        return 0
    if isinstance(device, bool) or not isinstance(device, int) or device < 0:
        raise UsageError(f"a device is a GPU index, 0 or more; got {device!r}")
    if name == "cpu" and device != 0:
        raise UsageError(f"the cpu backend has one device, 0; got device {device}. A device index picks a GPU of "
                         "the cuda backend: build with --backend cuda (and run that cuda engine) to use one")
    if name == "cuda":
        count = device_count()
        if device >= count:
            raise UsageError(f"there is no GPU {device}: this process sees {count} (CUDA_VISIBLE_DEVICES="
                             f"{os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}); give an index below {count}")
    return device


#: Set in every worker that shares a host with other GPUs' workers (device worker processes, Ray tasks).
#: reprobuild itself never uses NCCL, but a framework loaded in the same process (torch.distributed, Ray's
#: collectives) might, and NCCL's NVLink multicast (NVLS) is kept off on multi-GPU hosts.
MULTI_DEVICE_ENV = {"NCCL_NVLS_ENABLE": "0"}


def resolve_devices(requested: str | Sequence[int], backend: str) -> list[int]:
    """``"all"`` or GPU indices (``--devices``) as devices of ``backend`` ('cpu' or 'cuda'): every visible GPU for
    ``all`` on cuda; device 0, the only one, on cpu. A device that does not exist is a UsageError saying how many
    there are."""
    if isinstance(requested, str) and requested != "all":
        raise UsageError(f"--devices is all or GPU indices; got {requested!r}")
    indices = [] if isinstance(requested, str) else [int(d) for d in requested]
    if not isinstance(requested, str) and (not indices or len(set(indices)) != len(indices)):
        raise UsageError(f"--devices needs distinct GPU indices; got {indices} (give each device once, or all)")
    if backend == "cpu":
        if requested != "all" and indices != [0]:
            raise UsageError(f"--devices {','.join(map(str, indices))}: this is a cpu engine, and the cpu backend has "
                             "one device, 0; give --devices 0, or build the engine with --backend cuda to run it "
                             "on several GPUs")
        return [0]
    if requested == "all":
        count = device_count()
        if count == 0:
            raise UsageError("--devices all: this process sees no GPU; check CUDA_VISIBLE_DEVICES and the driver "
                             "(nvidia-smi)")
        return list(range(count))
    for d in indices:
        try:
            check_device(backend, d)
        except UsageError as exc:
            raise UsageError(f"--devices {','.join(map(str, indices))}: {exc}") from None
    return indices


def get_backend(name: str, device: int | None = None) -> Backend:
    """The process's backend of that name (``cpu`` or ``cuda``) on one device: GPU ``device`` for cuda (None: 0),
    the host for cpu. One backend object per (name, device), so two engines on one GPU share its compiled
    kernels and streams' handles; raises if the backend or the device cannot be used here."""
    if name not in BACKENDS:
        raise UsageError(f"unknown backend {name!r}; choose one of: auto, {', '.join(BACKENDS)}")
    if device is not None and (isinstance(device, bool) or not isinstance(device, int)):
        check_device(name, device)  # raises: only an int index can be looked up
    with _LOCK:
        made = _BACKENDS.get((name, device or 0))
    if made is not None:  # made once, its device checked then: no driver call on every engine
        return made
    if name == "cuda":
        reason = cuda_unavailable_reason()
        if reason is not None:
            raise BackendUnavailableError(f"the cuda backend cannot be used: {reason}; use --backend cpu")
    index = check_device(name, device)
    with _LOCK:
        key = (name, index)
        if key not in _BACKENDS:
            _BACKENDS[key] = CudaBackend(index) if name == "cuda" else CpuBackend()
        return _BACKENDS[key]


def resolve_backend(name: str, device: int | None = None) -> tuple[Backend, str]:
    """Resolve ``auto``/``cpu``/``cuda`` (on ``device``, None: 0) to a backend, with a sentence saying why it was
    chosen."""
    where = f" (GPU {device})" if device else ""
    if name == "auto":
        reason = cuda_unavailable_reason()
        if reason is None:
            return get_backend("cuda", device), f"auto: a CUDA device is usable{where}"
        return get_backend("cpu", device), f"auto: cuda not usable ({reason})"
    return get_backend(name, device), f"requested: {name}{where}"


def cuda_module(backend: Backend, filename: str, dtype: str = "float32") -> Any:
    """The compiled NVRTC module of a ``.cu`` file for a CUDA backend's device (compiled once per process), built
    for tensors of ``dtype`` (see ``dtype.cuh``)."""
    if not isinstance(backend, CudaBackend):
        raise TypeError(f"{filename} needs the cuda backend, not {backend.name}")
    with backend.device:
        return load_module(filename, backend.compute_capability, backend.device_id, dtype)

"""Arrays from other frameworks: NumPy, CuPy, torch, and any object with ``__dlpack__``,
``__cuda_array_interface__`` or ``__array_interface__``.

An input is taken without a copy where the engine's backend can read it in place: a CUDA tensor on a cuda engine
becomes a CuPy array over the same device memory (``cupy.from_dlpack``, or ``cupy.asarray`` for the CUDA array
interface), a host array on a cpu engine becomes a NumPy array over the same host memory. The run then copies it
into the context's arena on the context's stream (device to device on cuda: a CUDA graph needs fixed addresses),
never through the host.

The context's stream reads a CUDA input only after the work that produces it (``share`` says which stream that is):
- a DLPack export is made while the context's stream is current, so the producer orders its pending work before
  that stream reads the memory (the DLPack ``stream`` protocol: torch, JAX, ...);
- a CuPy array carries no stream, so by CuPy's own convention (its ``__cuda_array_interface__`` export) its pending
  work is on the caller's current CuPy stream (``cupy.cuda.get_current_stream()``);
- a ``__cuda_array_interface__`` object names its stream (version 3's ``stream``: None when nothing is pending, 1
  the legacy default stream, 2 the per-thread default stream, else a ``cudaStream_t``). The run makes its stream
  wait for that one on the device (an event, ``Backend.wait_for``) rather than CuPy's host-blocking
  ``streamSynchronize``, which ``CUPY_CUDA_ARRAY_INTERFACE_SYNC=0`` would turn off.
For the last two the producer's stream then waits for the run's copy of its inputs, so work the caller enqueues
there next (overwriting the array, or CuPy's memory pool reusing it once it is freed) cannot change what the
run reads: the two-way ordering the CUDA array interface asks of a consumer.

A tensor on the wrong device, one that cannot be exported (a torch tensor that requires grad), or an object that is
not an array at all is an ``InputError`` that says which input and how to fix it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reprobuild.core.errors import InputError, UsageError
from reprobuild.kernels.backend import Backend

#: DLPack device types (``DLDeviceType`` in dlpack.h) that matter here.
DL_CPU, DL_CUDA, DL_CUDA_HOST, DL_CUDA_MANAGED = 1, 2, 3, 13
_HOST_TYPES = (DL_CPU, DL_CUDA_HOST)
_DEVICE_TYPES = (DL_CUDA, DL_CUDA_MANAGED)
#: The output forms ``ExecutionContext.execute`` can return.
OUTPUT_FORMS = ("numpy", "device", "torch")


def describe(value: Any) -> str:
    """'torch.Tensor', 'numpy.ndarray', ...: how an error names what it was given."""
    kind = type(value)
    module = kind.__module__.split(".")[0]
    return f"{module}.{kind.__qualname__}" if module != "builtins" else kind.__qualname__


def location(value: Any) -> tuple[str, int | None]:
    """Where an array-like lives: ('cpu', 0) or ('cuda', DEVICE); DEVICE is None for a CUDA-array-interface object
    where CuPy, which asks the driver, is not installed. A ValueError says why it cannot be told."""
    if isinstance(value, np.ndarray):
        return "cpu", 0
    device: Any = getattr(value, "device", None)
    if type(value).__module__.startswith("cupy") and hasattr(device, "id"):  # a CuPy array: no driver call
        return "cuda", int(device.id)
    if hasattr(value, "__cuda_array_interface__"):
        return "cuda", _pointer_device(_interface(value)["data"][0])
    dlpack_device = getattr(value, "__dlpack_device__", None)
    if dlpack_device is not None:
        kind, device = (int(x) for x in dlpack_device())
        if kind in _HOST_TYPES:
            return "cpu", 0
        if kind in _DEVICE_TYPES:
            return "cuda", device
        raise ValueError(f"it lives on DLPack device type {kind} (neither the host nor a CUDA GPU)")
    if hasattr(value, "__array_interface__") or hasattr(value, "__array__"):
        return "cpu", 0
    raise ValueError("it is not an array: give a NumPy or CuPy array, a torch tensor, or any object with "
                     "__dlpack__, __cuda_array_interface__ or __array_interface__")


def _interface(value: Any) -> dict[str, Any]:
    """The object's ``__cuda_array_interface__`` dictionary; a ValueError when it is not one."""
    desc = value.__cuda_array_interface__
    if not isinstance(desc, dict) or not isinstance(desc.get("data"), (tuple, list)) or not desc["data"]:
        raise ValueError(f"its __cuda_array_interface__ is not a dictionary with a 'data' entry: {desc!r:.200}")
    return desc


def _pointer_device(pointer: int) -> int | None:
    try:
        import cupy  # lazy: optional (the cuda extras)
    except ImportError:  # a CPU-only install: the array is on some GPU, and a cpu engine cannot read it anyway
        return None
    if not pointer:
        return int(cupy.cuda.runtime.getDevice())  # an empty array: no memory to ask about
    return int(cupy.cuda.runtime.pointerGetAttributes(pointer).device)


def _hint(exc: BaseException) -> str:
    """The fix for an export refused because the tensor needs grad (torch's message says 'grad')."""
    return " (for torch: tensor.detach())" if "grad" in str(exc) else ""


def to_backend(value: Any, backend: Backend, name: str) -> Any:
    """``value`` as an array the backend reads (a NumPy or CuPy array), sharing its memory where it can: a host
    array stays on the host (the run uploads it), a CUDA array on the engine's GPU is viewed in place. Call it
    with the stream that will read the array current (``backend.activate(stream)``); ``share`` also says which
    stream's work must come first."""
    return share(value, backend, name, None)[0]


def share(value: Any, backend: Backend, name: str, caller_stream: int | None) -> tuple[Any, int | None]:
    """``value`` as ``to_backend`` makes it, and the stream whose pending work may still write it (a CUDA stream
    handle), which the reading stream must wait for (``Backend.wait_for``); None when there is none to wait for: a
    host array, a DLPack export (ordered by the protocol), an interface object with no ``stream``.
    ``caller_stream``: the caller's current CuPy stream (``Backend.caller_stream``, taken before any
    ``activate``), the producer of a CuPy array; None where the reader is that stream."""
    try:
        where, device = location(value)
    except (ValueError, RuntimeError, TypeError) as exc:  # torch raises RuntimeError for a tensor needing grad
        raise InputError(f"input {name!r} is a {describe(value)}, which reprobuild cannot read: {exc}{_hint(exc)}") \
            from None
    try:
        if where == "cpu":
            if isinstance(value, np.ndarray):
                return value, None
            if hasattr(value, "__array_interface__") or hasattr(value, "__array__"):
                return np.asarray(value), None  # writable where the producer's memory is (NumPy's DLPack is not)
            return np.from_dlpack(value), None
        if backend.name != "cuda":
            gpu = f"GPU {device}" if device is not None else "a GPU (CuPy is not installed to tell which)"
            raise InputError(f"input {name!r} is a {describe(value)} on {gpu}, but this engine runs on the "
                             f"{backend.name} backend; give a host array (for torch: tensor.cpu(); for CuPy: "
                             "cupy.asnumpy(array); for another CUDA array: its copy to the host) or build the "
                             "engine with --backend cuda")
        engine_device = int(getattr(backend, "device_id", 0))
        if device != engine_device:
            raise InputError(f"input {name!r} is a {describe(value)} on GPU {device}, but this engine runs on GPU "
                             f"{engine_device}; move it there first (for torch: tensor.to('cuda:{engine_device}'))")
        xp = backend.xp
        if isinstance(value, xp.ndarray):
            return value, caller_stream
        if hasattr(value, "__dlpack__"):
            return xp.from_dlpack(value), None
        return _from_interface(value, xp)
    except InputError:
        raise
    except (BufferError, RuntimeError, TypeError, ValueError) as exc:
        raise InputError(f"input {name!r}: the {describe(value)} cannot be shared with reprobuild: {exc}"
                         f"{_hint(exc)}") from None


class _Unsynchronized:
    """An interface object as CuPy may import it without its ``stream`` (the reader waits for that stream on the
    device instead); keeps the original, the memory's owner, alive as long as the CuPy array."""

    def __init__(self, desc: dict[str, Any], owner: Any) -> None:
        self.__cuda_array_interface__ = {k: v for k, v in desc.items() if k != "stream"}
        self.owner = owner


def _from_interface(value: Any, xp: Any) -> tuple[Any, int | None]:
    """A ``__cuda_array_interface__`` object as a CuPy array, and its version-3 ``stream`` as a handle to wait for
    (0, which the specification forbids as ambiguous, is taken as the legacy default stream, as CUDA does)."""
    desc = _interface(value)
    stream = desc.get("stream")
    if stream is not None and (isinstance(stream, bool) or not isinstance(stream, int) or stream < 0):
        raise ValueError(f"its __cuda_array_interface__ 'stream' is {stream!r}; version 3 allows None, 1 (the legacy "
                         "default stream), 2 (the per-thread default stream) or a cudaStream_t handle")
    return xp.asarray(_Unsynchronized(desc, value)), stream


def check_output_form(form: str) -> str:
    if form not in OUTPUT_FORMS:
        raise UsageError(f"outputs may be returned as {', '.join(repr(f) for f in OUTPUT_FORMS)}; got {form!r}")
    return form


def as_torch(array: Any) -> Any:
    """A torch tensor over the same memory as a NumPy or CuPy array (DLPack; no copy)."""
    try:
        import torch  # lazy: optional, only for torch tensors
    except ImportError:
        raise UsageError("outputs as torch tensors need PyTorch installed (pip install torch); or ask for "
                         "'device' arrays, which any framework can import with from_dlpack") from None
    return torch.from_dlpack(array)

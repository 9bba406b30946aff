"""Arrays from other frameworks: NumPy, CuPy, torch, and any object with ``__dlpack__``,
``__cuda_array_interface__`` or ``__array_interface__``.

An input is taken without a copy where the engine's backend can read it in place: a CUDA tensor on a cuda engine
becomes a CuPy array over the same device memory (``cupy.from_dlpack``, or ``cupy.asarray`` for the CUDA array
interface), a host array on a cpu engine becomes a NumPy array over the same host memory. The run then copies it
into the context's arena on the context's stream (device to device on cuda: a CUDA graph needs fixed addresses),
never through the host. A DLPack export is made while the context's stream is current, so the producer orders its
pending work before that stream reads the memory (the DLPack ``stream`` protocol).

A tensor on the wrong device, one that cannot be exported (a torch tensor that requires grad), or an object that is
not an array at all is an ``InputError`` that says which input and how to fix it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reprobuild.errors import InputError, UsageError
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


def location(value: Any) -> tuple[str, int]:
    """Where an array-like lives: ('cpu', 0) or ('cuda', DEVICE); a ValueError says why it cannot be told."""
    if isinstance(value, np.ndarray):
        return "cpu", 0
    device: Any = getattr(value, "device", None)
    if type(value).__module__.startswith("cupy") and hasattr(device, "id"):  # a CuPy array: no driver call
        return "cuda", int(device.id)
    if hasattr(value, "__cuda_array_interface__"):
        return "cuda", _pointer_device(value.__cuda_array_interface__["data"][0])
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


def _pointer_device(pointer: int) -> int:
    import cupy

    if not pointer:
        return int(cupy.cuda.runtime.getDevice())  # an empty array: no memory to ask about
    return int(cupy.cuda.runtime.pointerGetAttributes(pointer).device)


def _hint(exc: BaseException) -> str:
    """The fix for an export refused because the tensor needs grad (torch's message says 'grad')."""
    return " (for torch: tensor.detach())" if "grad" in str(exc) else ""


def to_backend(value: Any, backend: Backend, name: str) -> Any:
    """``value`` as an array the backend reads (a NumPy or CuPy array), sharing its memory where it can: a host
    array stays on the host (the run uploads it), a CUDA array on the engine's GPU is viewed in place. Call it
    with the stream that will read the array current (``backend.activate(stream)``)."""
    try:
        where, device = location(value)
    except (ValueError, RuntimeError, TypeError) as exc:  # torch raises RuntimeError for a tensor needing grad
        raise InputError(f"input {name!r} is a {describe(value)}, which reprobuild cannot read: {exc}{_hint(exc)}") \
            from None
    try:
        if where == "cpu":
            if isinstance(value, np.ndarray):
                return value
            if hasattr(value, "__array_interface__") or hasattr(value, "__array__"):
                return np.asarray(value)  # writable where the producer's memory is (NumPy's DLPack import is not)
            return np.from_dlpack(value)
        if backend.name != "cuda":
            raise InputError(f"input {name!r} is a {describe(value)} on GPU {device}, but this engine runs on the "
                             f"{backend.name} backend; give a host array (for torch: tensor.cpu(); for CuPy: "
                             "cupy.asnumpy(array)) or build the engine with --backend cuda")
        engine_device = int(getattr(backend, "device_id", 0))
        if device != engine_device:
            raise InputError(f"input {name!r} is a {describe(value)} on GPU {device}, but this engine runs on GPU "
                             f"{engine_device}; move it there first (for torch: tensor.to('cuda:{engine_device}'))")
        xp = backend.xp
        if isinstance(value, xp.ndarray):
            return value
        return xp.from_dlpack(value) if hasattr(value, "__dlpack__") else xp.asarray(value)
    except InputError:
        raise
    except (BufferError, RuntimeError, TypeError, ValueError) as exc:
        raise InputError(f"input {name!r}: the {describe(value)} cannot be shared with reprobuild: {exc}"
                         f"{_hint(exc)}") from None


def check_output_form(form: str) -> str:
    if form not in OUTPUT_FORMS:
        raise UsageError(f"outputs may be returned as {', '.join(repr(f) for f in OUTPUT_FORMS)}; got {form!r}")
    return form


def as_torch(array: Any) -> Any:
    """A torch tensor over the same memory as a NumPy or CuPy array (DLPack; no copy)."""
    try:
        import torch
    except ImportError:
        raise UsageError("outputs as torch tensors need PyTorch installed (pip install torch); or ask for "
                         "'device' arrays, which any framework can import with from_dlpack") from None
    return torch.from_dlpack(array)

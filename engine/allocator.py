"""``GpuAllocator``: who supplies the memory a runtime or builder allocates (TensorRT's ``IGpuAllocator``).

The runtime asks its allocator for every execution context's scratch memory (activations, workspace, the cuBLAS
workspace: ``Engine.device_memory_size`` bytes); the builder asks for the scratch memory of its golden run. A
pipeline that owns the GPU's memory (a PyTorch caching allocator, an arena shared with other engines) plugs its own
in by subclassing and overriding ``allocate`` (and ``deallocate`` to hear when reprobuild lets go):

    class TorchAllocator(GpuAllocator):
        def allocate(self, size, alignment, purpose, backend):
            return torch.empty(size, dtype=torch.uint8, device="cuda")

``allocate`` may return a NumPy or CuPy array, a torch tensor, or any DLPack / CUDA-array-interface object of at
least ``size`` bytes on the backend's device, whose address is a multiple of ``alignment``; reprobuild keeps a
reference for as long as it uses the memory and then calls ``deallocate`` with the same object. Engine weights are
the engine's own (uploaded once at deserialization) and do not come from the allocator.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import numpy as np

from reprobuild.core.errors import ResourceError, UsageError
from reprobuild.engine.interop import describe, to_backend
from reprobuild.engine.memory import human_bytes
from reprobuild.kernels.backend import Backend

#: Scratch memory is aligned to this many bytes: cudaMalloc's 256 on cuda; on cpu, the 16 of NumPy's allocations
#: (enough for every element type; the memory plan aligns offsets within the arena).
ALIGNMENT = {"cuda": 256, "cpu": 16}


class GpuAllocator:
    """The default allocator: a fresh array of the backend (CuPy's memory pool on cuda, NumPy on cpu). Counts what
    it hands out and what comes back (``allocated_bytes``, ``live_bytes``), so a test or a memory report can see it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.allocated_bytes = 0  #: every byte handed out so far
        self.live_bytes = 0  #: handed out and not yet given back

    def allocate(self, size: int, alignment: int, purpose: str, backend: Backend) -> Any:
        """At least ``size`` bytes on ``backend``, aligned to ``alignment``; ``purpose`` says what for
        ('context scratch memory', 'golden run scratch memory')."""
        return backend.empty_bytes(size)

    def deallocate(self, memory: Any) -> None:
        """reprobuild no longer uses ``memory`` (what ``allocate`` returned)."""

    def _account(self, delta: int) -> None:
        with self._lock:
            if delta > 0:
                self.allocated_bytes += delta
            self.live_bytes += delta


def _address(array: Any) -> int:
    return int(array.data.ptr) if hasattr(array.data, "ptr") else int(array.ctypes.data)


def allocate_scratch(allocator: GpuAllocator, size: int, purpose: str, backend: Backend, owner: object) -> Any:
    """Scratch memory from ``allocator`` as a 1-D uint8 array of ``backend`` of exactly ``size`` bytes (a view of
    what it returned); ``deallocate`` is called when ``owner`` (the context) is collected, once its stream has
    finished. Memory of the wrong size, device, dtype or alignment is a ``UsageError`` naming the allocator;
    ``None`` (out of memory) is a ``ResourceError``."""
    name, alignment = type(allocator).__name__, ALIGNMENT[backend.name]
    stream = getattr(owner, "stream", None)
    # With the owner's stream current: CuPy's pool ties the block to the stream that will use it, and a DLPack
    # export (a torch allocator's tensor) orders its producer's pending work before that stream.
    with backend.activate(stream):
        try:
            memory = allocator.allocate(size, alignment, purpose, backend)
        except MemoryError:  # NumPy's, or CuPy's OutOfMemoryError (a MemoryError)
            memory = None
        if memory is None:
            raise ResourceError(f"the GPU allocator {name} could not allocate {size} bytes ({human_bytes(size)}) of "
                                f"{purpose} on {backend.name}: not enough memory is available, although the cap "
                                "allowed it (another process, a cgroup or ulimit may hold the rest); free memory, "
                                "lower --max-memory to be refused before any work, or rebuild the engine for "
                                "smaller inputs")
        array = to_backend(memory, backend, f"{purpose} from {name}")
    nbytes = int(array.nbytes)
    if nbytes < size:
        raise UsageError(f"the GPU allocator {name} returned {nbytes} bytes ({describe(memory)}) for {purpose}, "
                         f"but {size} were asked for")
    if not getattr(array, "flags", None) or not array.flags.c_contiguous:
        raise UsageError(f"the GPU allocator {name} returned a non-contiguous {describe(memory)} for {purpose}")
    if _address(array) % alignment:
        raise UsageError(f"the GPU allocator {name} returned memory at address {_address(array):#x} for {purpose}, "
                         f"which is not aligned to {alignment} bytes")
    flat = array.reshape(-1).view(np.uint8 if backend.name == "cpu" else backend.xp.uint8)[:size]
    allocator._account(size)
    weakref.finalize(owner, _release, allocator, memory, size, stream)
    return flat


def _release(allocator: GpuAllocator, memory: Any, size: int, stream: Any) -> None:
    """Give the memory back once the owner's stream has finished with it: a context dropped with a run in flight
    would otherwise keep writing memory that the allocator (CuPy's pool, torch's) hands to someone else."""
    if stream is not None:
        stream.synchronize()
    allocator._account(-size)
    allocator.deallocate(memory)


def check_allocator(allocator: Any) -> GpuAllocator:
    if allocator is None:
        return GpuAllocator()
    if not isinstance(allocator, GpuAllocator):
        raise UsageError(f"gpu_allocator must be a reprobuild GpuAllocator (subclass it and override allocate); "
                         f"got a {type(allocator).__name__}")
    return allocator

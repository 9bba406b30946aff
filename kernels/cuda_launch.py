"""Launching NVRTC kernels on the backend's current stream, with explicitly typed scalar arguments.

A kernel parameter is read with the width of its C type: a Python int passed for an ``int`` parameter would be
sent as 64 bits, and one passed for a ``long long`` could come from a 32-bit value. Every scalar therefore goes
through :func:`i32`, :func:`i64` or :func:`f32`, which also refuse values that do not fit. Nothing here imports
CuPy: the kernels are reached through ``backend``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from reprobuild.errors import BuildError
from reprobuild.kernels.backend import Backend, CudaBackend, cuda_module

#: Threads per block of the one-dimensional (grid-stride) kernels and of the block reductions.
BLOCK = 256
#: Grid-stride kernels never launch more blocks than this; each thread then walks several elements.
MAX_BLOCKS = 1 << 16
#: The largest gridDim.y and gridDim.z CUDA accepts.
MAX_GRID_YZ = 65535

INT32_MAX = 2**31 - 1


def i32(value: int, what: str = "a kernel argument") -> np.int32:
    """``value`` as a C ``int``, refusing what does not fit (the kernels index with 32-bit ints there)."""
    if not -INT32_MAX - 1 <= int(value) <= INT32_MAX:
        raise BuildError(f"{what} is {value}, beyond the 32-bit range this kernel indexes with; "
                         "split the layer into smaller ones or use another tactic")
    return np.int32(value)


def i64(value: int) -> np.int64:
    return np.int64(value)


def f32(value: float) -> np.float32:
    return np.float32(value)


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def kernel(backend: Backend, filename: str, name: str) -> Any:
    """The ``extern "C"`` kernel ``name`` of a ``.cu`` file beside this module, compiled for the backend."""
    return cuda_module(backend, filename).function(name)


def launch(backend: Backend, fn: Any, grid: tuple[int, int, int], block: tuple[int, int, int],
           args: Sequence[Any], shared_mem: int = 0) -> None:
    """Launch ``fn`` on the backend's current stream (the one the execution context made current)."""
    if grid[1] > MAX_GRID_YZ or grid[2] > MAX_GRID_YZ or grid[0] > INT32_MAX:
        raise BuildError(f"launch grid {grid} exceeds CUDA's limits (x < 2^31, y and z <= {MAX_GRID_YZ})")
    fn(grid, block, tuple(args), shared_mem=shared_mem, stream=current_stream(backend))


def launch_linear(backend: Backend, fn: Any, total: int, args: Sequence[Any]) -> None:
    """Launch a grid-stride kernel over ``total`` elements: BLOCK threads a block, at most MAX_BLOCKS blocks."""
    blocks = max(1, min(cdiv(total, BLOCK), MAX_BLOCKS))
    launch(backend, fn, (blocks, 1, 1), (BLOCK, 1, 1), args)


def launch_per_row(backend: Backend, fn: Any, rows: int, args: Sequence[Any]) -> None:
    """Launch a kernel that gives each row (a reduction) one block of BLOCK threads, rows striding by the grid."""
    launch(backend, fn, (max(1, min(rows, MAX_BLOCKS)), 1, 1), (BLOCK, 1, 1), args)


def current_stream(backend: Backend) -> Any:
    if not isinstance(backend, CudaBackend):
        raise TypeError(f"CUDA kernels need the cuda backend, not {backend.name}")
    return backend.current_stream()


def on_stream(backend: Backend) -> Any:
    """A context making the backend's current stream CuPy's current stream, for library calls (cuBLAS) that
    take no stream argument; a no-op where the execution context already made it current."""
    return current_stream(backend)

"""Describing NVRTC kernel launches (as data, see ``launch.py``), with explicitly typed scalar arguments.

A kernel parameter is read with the width of its C type: a Python int passed for an ``int`` parameter would be
sent as 64 bits, and one passed for a ``long long`` could come from a 32-bit value. Every scalar therefore goes
through :func:`i32`, :func:`i64` or :func:`f32`, which also refuse values that do not fit. Nothing here imports
CuPy: the kernels are reached through ``backend``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from reprobuild.core.errors import BuildError
from reprobuild.kernels.backend import Backend, cuda_module
from reprobuild.kernels.launch import INT32_MAX, In, KernelLaunch, LaunchPlan
from reprobuild.kernels.tactic import LayerSpec, positional

#: Threads per block of the one-dimensional (grid-stride) kernels and of the block reductions.
BLOCK = 256
#: Grid-stride kernels never launch more blocks than this; each thread then walks several elements.
MAX_BLOCKS = 1 << 16


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


def kernel(backend: Backend, filename: str, name: str, dtype: str = "float32") -> Any:
    """The ``extern "C"`` kernel ``name`` of a ``.cu`` file beside this module, compiled for the backend and for
    tensors of ``dtype`` (the files written on ``dtype.cuh``'s ``elem_t``)."""
    return cuda_module(backend, filename, dtype).function(name)


def kernel_launch(backend: Backend, filename: str, name: str, grid: tuple[int, int, int],
                  block: tuple[int, int, int], args: Sequence[Any], shared_mem: int = 0,
                  dtype: str = "float32") -> KernelLaunch:
    """One launch of kernel ``name`` of ``filename`` (built for ``dtype``), as data (see ``launch.py``)."""
    label = f"{filename}:{name}" + ("" if dtype == "float32" else f"[{dtype}]")
    try:
        return KernelLaunch(kernel(backend, filename, name, dtype), label, grid, block, tuple(args), shared_mem)
    except ValueError as exc:
        raise BuildError(str(exc)) from None


def linear_grid(total: int) -> tuple[int, int, int]:
    """The grid of a grid-stride kernel over ``total`` elements (BLOCK threads a block): at most MAX_BLOCKS."""
    return (max(1, min(cdiv(total, BLOCK), MAX_BLOCKS)), 1, 1)


def linear(backend: Backend, filename: str, name: str, total: int, args: Sequence[Any],
           dtype: str = "float32") -> KernelLaunch:
    """A grid-stride kernel over ``total`` elements: BLOCK threads a block, at most MAX_BLOCKS blocks."""
    return kernel_launch(backend, filename, name, linear_grid(total), (BLOCK, 1, 1), args, dtype=dtype)


def per_row(backend: Backend, filename: str, name: str, rows: int, args: Sequence[Any],
            dtype: str = "float32") -> KernelLaunch:
    """A kernel that gives each row (a reduction) one block of BLOCK threads, rows striding by the grid."""
    return kernel_launch(backend, filename, name, (max(1, min(rows, MAX_BLOCKS)), 1, 1), (BLOCK, 1, 1), args,
                         dtype=dtype)


def operand_refs(layer: LayerSpec, consts: Mapping[int, Any]) -> list[Any]:
    """A launch argument per input position: the prepared constant there, or a ref to the activation input."""
    return positional(layer, consts, [In(i) for i in range(len(layer.inputs))])


def plan(backend: Backend, *launches: Any, holds: Sequence[Any] = ()) -> LaunchPlan:
    """A layer's launch plan: these launches in order, keeping ``holds`` (weights) alive with it."""
    return LaunchPlan(backend, tuple(launches), tuple(holds))

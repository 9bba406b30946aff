"""Activation memory planning: one arena per execution context, tensors placed by lifetime, then the largest
layer workspace, then the cuBLAS workspace of the context's handle.

Each activation lives from the layer that writes it to the last layer that reads it (network inputs from
before the first layer, network outputs to the end). Tensors whose lifetimes do not overlap share bytes.
Alias layers (Reshape, Flatten) give their output the input's bytes. Placement is greedy by size, then first
write, then name, first fit: a pure function of the network and the chosen tactics.

The memory cap (``check_memory_cap``) is checked before an engine is prepared and before each execution context
allocates its scratch memory: persistent memory (the weights) plus every live context's scratch memory may not
exceed the cap, by default the device's total memory (cuda) or the host's physical memory (cpu).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reprobuild.core.errors import ResourceError

ALIGNMENT = 256


@dataclass(frozen=True)
class LayerUse:
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    aliases_input: bool = False
    workspace_bytes: int = 0


@dataclass(frozen=True)
class MemoryPlan:
    offsets: Mapping[str, int]
    activation_bytes: int
    workspace_offset: int
    workspace_bytes: int
    unshared_bytes: int
    alignment: int = ALIGNMENT
    #: The cuBLAS workspace of the context's handle (0 when no chosen tactic calls cuBLAS), after the workspace.
    library_bytes: int = 0

    @property
    def library_offset(self) -> int:
        return self.workspace_offset + self.workspace_bytes

    @property
    def context_bytes(self) -> int:
        return self.library_offset + self.library_bytes


def _align(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def plan_memory(
    sizes: Mapping[str, int],
    layers: Sequence[LayerUse],
    inputs: Sequence[str],
    outputs: Sequence[str],
    alignment: int = ALIGNMENT,
    library_bytes: int = 0,
) -> MemoryPlan:
    """Place every activation tensor named in ``sizes`` (bytes) in one arena, then the workspace after it, then
    ``library_bytes`` for the context's cuBLAS handle."""
    root = {t: t for t in sizes}
    first: dict[str, int] = {t: -1 for t in inputs}
    last: dict[str, int] = {}
    for i, layer in enumerate(layers):
        for t in layer.inputs:
            if t in sizes:
                last[root[t]] = max(last.get(root[t], i), i)
        for t in layer.outputs:
            if t not in sizes:
                continue  # not an activation: nothing to place (the loader refuses such an engine before this)
            if layer.aliases_input and layer.inputs and layer.inputs[0] in sizes:
                root[t] = root[layer.inputs[0]]
            else:
                first[t] = i
    for t in outputs:
        if t in sizes:
            last[root[t]] = len(layers)
    # A tensor no layer writes and no input binds lives from the start (the loader refuses such an engine too).
    roots = sorted({root[t] for t in sizes}, key=lambda t: (-sizes[t], first.get(t, -1), t))
    placed: list[tuple[int, int, int, int]] = []  # (offset, size, first, last)
    offsets: dict[str, int] = {}
    for t in roots:
        size = _align(max(sizes[t], 1), alignment)
        begin = first.get(t, -1)
        end = last.get(t, begin)
        busy = sorted((o, s) for o, s, b, e in placed if b <= end and begin <= e)
        offset = 0
        for o, s in busy:
            if offset + size <= o:
                break
            offset = max(offset, o + s)
        placed.append((offset, size, begin, end))
        offsets[t] = offset
    activation_bytes = max((o + s for o, s, _, _ in placed), default=0)
    workspace = max((layer.workspace_bytes for layer in layers), default=0)
    return MemoryPlan(
        offsets={t: offsets[root[t]] for t in sorted(sizes)},
        activation_bytes=activation_bytes,
        workspace_offset=activation_bytes,
        workspace_bytes=_align(workspace, alignment),
        unshared_bytes=sum(_align(max(sizes[t], 1), alignment) for t in sizes if root[t] == t),
        alignment=alignment,
        library_bytes=_align(library_bytes, alignment),
    )


# --- the memory cap ------------------------------------------------------------------------------------------------


def physical_memory_bytes() -> int | None:
    """The host's physical memory (page size times physical pages); None where the OS does not say (no sysconf)."""
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return int(pages) * int(page_size) if pages > 0 and page_size > 0 else None


def human_bytes(n: int) -> str:
    """``n`` bytes in binary units, e.g. ``1.5 GiB`` (one decimal; bytes below 1 KiB as an integer)."""
    value, unit = float(n), "bytes"
    for next_unit in ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if value < 1024:
            break
        value, unit = value / 1024, next_unit
    return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"


def check_memory_cap(backend: str, weights_bytes: int, context_bytes: int, contexts: int, cap: int | None,
                     cap_source: str) -> None:
    """Refuse, before anything is allocated, an engine whose persistent memory (``weights_bytes``) plus the
    scratch memory of ``contexts`` execution contexts (``context_bytes`` each) exceeds ``cap`` bytes (None: no
    cap), with a :class:`ResourceError` saying what is needed, the cap, where the cap came from and how to raise
    it."""
    need = weights_bytes + context_bytes * contexts
    if cap is None or need <= cap:
        return
    per = (f"{human_bytes(context_bytes)} of scratch memory (activations and workspace) for one execution context"
           if contexts == 1 else
           f"{human_bytes(context_bytes)} of scratch memory for each of {contexts} execution contexts (those alive "
           "and the one asked for)")
    raise ResourceError(
        f"this engine needs {need} bytes ({human_bytes(need)}) of {backend} memory: {human_bytes(weights_bytes)} of "
        f"weights (persistent) + {per}; the cap is {cap} bytes ({human_bytes(cap)}), {cap_source}. If this machine "
        "really has that much memory, raise the cap (--max-memory BYTES on the command line, "
        "Runtime(max_memory=BYTES) in Python); otherwise rebuild the engine for smaller inputs (reprobuild build "
        "--input-shape), or use fewer execution contexts at once")


@dataclass(frozen=True)
class MemoryTotals:
    """TensorRT's build-log memory lines for one engine. Host persistent: the engine file, which the runtime keeps
    (on cpu the weights are views into it). Device persistent: the weights uploaded to the GPU (none on cpu).
    Scratch: what each execution context allocates (activations, workspace, cuBLAS workspace)."""

    host_persistent_bytes: int
    device_persistent_bytes: int
    scratch_bytes: int

    @classmethod
    def of(cls, backend: str, engine_bytes: int, weights_bytes: int, context_bytes: int) -> MemoryTotals:
        return cls(engine_bytes, weights_bytes if backend == "cuda" else 0, context_bytes)

    def lines(self) -> list[str]:
        return [f"Total Host Persistent Memory: {self.host_persistent_bytes} bytes",
                f"Total Device Persistent Memory: {self.device_persistent_bytes} bytes",
                f"Total Scratch Memory: {self.scratch_bytes} bytes"]


def device_memory_info(backend: object) -> tuple[int, int] | None:
    """(free, total) bytes of the backend's GPU from ``cudaMemGetInfo``; None on cpu."""
    if getattr(backend, "name", None) != "cuda":
        return None
    import cupy  # lazy: optional (the cuda extras); only the CUDA backend needs it

    with cupy.cuda.Device(getattr(backend, "device_id", 0)):
        free, total = cupy.cuda.runtime.memGetInfo()
    return int(free), int(total)

"""Activation memory planning: one arena per execution context, tensors placed by lifetime, then the largest
layer workspace, then the cuBLAS workspace of the context's handle.

Each activation lives from the layer that writes it to the last layer that reads it (network inputs from
before the first layer, network outputs to the end). Tensors whose lifetimes do not overlap share bytes.
Alias layers (Reshape, Flatten) give their output the input's bytes. Placement is greedy by size, then first
write, then name, first fit: a pure function of the network and the chosen tactics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

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
            if layer.aliases_input:
                root[t] = root[layer.inputs[0]]
            else:
                first[t] = i
    for t in outputs:
        last[root[t]] = len(layers)
    roots = sorted({root[t] for t in sizes}, key=lambda t: (-sizes[t], first[t], t))
    placed: list[tuple[int, int, int, int]] = []  # (offset, size, first, last)
    offsets: dict[str, int] = {}
    for t in roots:
        size = _align(max(sizes[t], 1), alignment)
        begin, end = first[t], last.get(t, first[t])
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

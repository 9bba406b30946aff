"""The divergence locator: which layer is the first to compute different bits, with which tactic, and by how
much (largest absolute difference, largest difference in units in the last place, how many elements)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from reprobuild.engine import Engine
from reprobuild.engine.golden import layer_digest
from reprobuild.kernels.identity import shown_label
from reprobuild.manifest.models import DigestRecord
from reprobuild.verify.run import LayerDivergence, Locator


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise distance in units in the last place between two float32 arrays (0 for identical bits)."""
    ia = a.astype(np.float32, copy=False).view(np.int32).astype(np.int64)
    ib = b.astype(np.float32, copy=False).view(np.int32).astype(np.int64)
    # Map the sign-magnitude bit patterns onto a line where adjacent floats are adjacent integers.
    ia = np.where(ia < 0, np.int64(-(2**31)) - ia, ia)
    ib = np.where(ib < 0, np.int64(-(2**31)) - ib, ib)
    return np.abs(ia - ib)


def divergence(index: int, engine: Engine, first: Sequence[np.ndarray],
               second: Sequence[np.ndarray] | None) -> LayerDivergence:
    layer = engine.layers[index]
    found = LayerDivergence(index=index, name=layer.name, op=layer.op, tactic=shown_label(layer.tactic))
    if second is None:
        return found
    a, b = next((x, y) for x, y in zip(first, second) if x.tobytes() != y.tobytes())
    differ = a.reshape(-1).view(np.uint8).reshape(a.size, -1) != b.reshape(-1).view(np.uint8).reshape(b.size, -1)
    mask = differ.any(axis=1)
    numeric = a.dtype.kind == "f"
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64)) if numeric else None
    return found.model_copy(update={
        "max_abs": float(np.nanmax(diff)) if diff is not None else None,
        "max_ulp": int(ulp_distance(a, b).max()) if a.dtype == np.float32 else None,
        "differing": int(mask.sum()),
        "total": int(a.size),
    })


def locate(engine: Engine, inputs: Mapping[str, np.ndarray], attempts: int = 10) -> Locator:
    """Trace runs (alternating between one context and fresh ones) until two disagree; name the first layer."""
    context = engine.create_execution_context()
    _, reference = context.execute_traced(inputs)
    for attempt in range(1, attempts + 1):
        other = context if attempt % 2 else engine.create_execution_context()
        _, layers = other.execute_traced(inputs)
        for i, (a, b) in enumerate(zip(reference, layers)):
            if any(x.tobytes() != y.tobytes() for x, y in zip(a, b)):
                where = "the same context" if other is context else "a fresh context"
                return Locator(reproduced=True, layer=divergence(i, engine, a, b),
                               detail=f"traced run {attempt + 1} on {where} first differs from the first traced run "
                                      f"at layer {i}")
    return Locator(reproduced=False, layer=None,
                   detail=f"{attempts + 1} traced runs in one thread gave identical layers: the divergence needs "
                          "concurrent threads, streams or another process to show")


def locate_against(engine: Engine, inputs: Mapping[str, np.ndarray], golden: Sequence[DigestRecord]) -> Locator:
    """The first layer whose outputs differ from the per-layer digests the build recorded."""
    _, layers = engine.create_execution_context().execute_traced(inputs)
    for i, (outs, record) in enumerate(zip(layers, golden)):
        if layer_digest(outs) != record.sha256:
            return Locator(reproduced=True, layer=divergence(i, engine, outs, None),
                           detail=f"layer {i} is the first whose outputs differ from the digests the build recorded")
    return Locator(reproduced=False, layer=None,
                   detail="a traced run matched every layer digest the build recorded; the difference is not "
                          "reproducible in one traced run")

"""Golden vectors: seeded inputs and the digests of what an engine computes from them.

The builder runs each new engine once on inputs drawn from a recorded seed and records the sha256 of every
input, every output and every layer's outputs in the manifest's pinned part. ``reprobuild verify --against``
draws the same inputs again, anywhere, and compares bit for bit. Lives beside the runtime: verifying needs no
builder and no onnx.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from reprobuild.digest import array_digest, array_digests, digest_of


def golden_inputs(bindings: Sequence[Any], seed: int) -> dict[str, np.ndarray]:
    """Standard-normal float32 arrays for each binding (in binding order), from one seeded generator."""
    rng = np.random.default_rng(seed)
    return {b.name: rng.standard_normal(tuple(b.shape), dtype=np.float32).astype(b.dtype, copy=False)
            for b in bindings}


def layer_digest(outputs: Sequence[np.ndarray]) -> str:
    """One digest for all the outputs of a layer."""
    return digest_of([array_digest(o) for o in outputs])


def layer_digests(layers: Sequence[Sequence[np.ndarray]]) -> list[str]:
    """``layer_digest`` of every layer, the arrays hashed in parallel."""
    flat = array_digests([o for outputs in layers for o in outputs])
    out, i = [], 0
    for outputs in layers:
        out.append(digest_of(flat[i:i + len(outputs)]))
        i += len(outputs)
    return out

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

from reprobuild.core.digest import array_digest, array_digests, digest_of
from reprobuild.core.dtypes import is_float, np_dtype


def sample(rng: np.random.Generator, shape: Sequence[int], dtype: str) -> np.ndarray:
    """One seeded input of any dtype: standard normal for floats (drawn in float32, then rounded), fair coins
    for bools, and zeros for integers, which are often indices or shapes that other values would push out of
    range."""
    shape = tuple(shape)
    if dtype == "bool":
        return rng.random(shape, dtype=np.float32) < 0.5
    if is_float(dtype):
        return rng.standard_normal(shape, dtype=np.float32).astype(np_dtype(dtype), copy=False)
    return np.zeros(shape, dtype=np_dtype(dtype))


def golden_inputs(bindings: Sequence[Any], seed: int) -> dict[str, np.ndarray]:
    """An array for each binding (in binding order) from one seeded generator (``sample``); a binding whose
    value was pinned at build time gets that value."""
    rng = np.random.default_rng(seed)
    out = {}
    for b in bindings:
        pinned = getattr(b, "value", None)
        out[b.name] = np.array(pinned) if pinned is not None else sample(rng, b.shape, b.dtype)
    return out


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

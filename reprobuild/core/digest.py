"""Canonical serialization and digests shared by the builder, the manifest and the engine file.

Canonical JSON is compact, UTF-8, with sorted keys and no NaN or infinity; the same value always gives the same
bytes, on any machine, whatever order a dict was built in.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def sha256_hex(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def attrs_to_json(attrs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Attributes as JSON values with no floats: a float is written as its shortest round-trip ``repr``."""

    def conv(v: Any) -> Any:
        if isinstance(v, float):
            return repr(v)
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        return v

    return {k: conv(v) for k, v in attrs}


def digest_of(value: Any) -> str:
    """sha256 of the canonical JSON of a JSON-able value."""
    return sha256_hex(canonical_json(value))


def little_endian(array: np.ndarray) -> np.ndarray:
    """The array C-ordered and little-endian (a view when it already is): the form weights are hashed and
    stored in."""
    arr = np.ascontiguousarray(array)
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and not np.little_endian):
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return arr


#: What ``array_digest`` covers, as the CLI labels a tensor's digest (``run``, ``inspect``): one digest of a tensor
#: everywhere, the one the manifest's golden record and the engine's weights hold.
TENSOR_DIGEST_LABEL = "sha256 (dtype+shape+bytes)"


def array_digest(array: np.ndarray) -> str:
    """sha256 over dtype, shape and contents: two arrays share a digest only if they are the same tensor. The only
    digest of a tensor reprobuild shows or records (``TENSOR_DIGEST_LABEL``); a file's digest is the sha256 of its
    bytes."""
    arr = little_endian(array)
    h = hashlib.sha256()
    h.update(canonical_json({"dtype": np.dtype(arr.dtype).name, "shape": list(arr.shape)}))
    h.update(memoryview(arr.reshape(-1).view(np.uint8).data))
    return h.hexdigest()


def array_digests(arrays: Sequence[np.ndarray]) -> list[str]:
    """``array_digest`` of each array, hashed in parallel threads (hashlib releases the GIL on large buffers)."""
    if sum(a.nbytes for a in arrays) < (8 << 20):
        return [array_digest(a) for a in arrays]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(array_digest, arrays))

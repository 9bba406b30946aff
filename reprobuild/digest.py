"""Canonical serialization and digests shared by the builder, the manifest and the engine file.

Canonical JSON is compact, UTF-8, with sorted keys and no NaN or infinity; the same value always gives the same
bytes, on any machine, whatever order a dict was built in.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def sha256_hex(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def digest_of(value: Any) -> str:
    """sha256 of the canonical JSON of a JSON-able value."""
    return sha256_hex(canonical_json(value))


def array_bytes(array: np.ndarray) -> bytes:
    """The little-endian, C-ordered bytes of an array: the form weights are hashed and stored in."""
    arr = np.ascontiguousarray(array)
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and np.little_endian is False):
        arr = arr.byteswap().view(arr.dtype.newbyteorder("<"))
    return arr.tobytes()


def array_digest(array: np.ndarray) -> str:
    """sha256 over dtype, shape and contents: two arrays share a digest only if they are the same tensor."""
    h = hashlib.sha256()
    h.update(canonical_json({"dtype": np.dtype(array.dtype).name, "shape": list(array.shape)}))
    h.update(array_bytes(array))
    return h.hexdigest()

"""The engine file: safetensors' layout, plus a version and digests.

    offset 0   magic            8 bytes   b"RPBENGN\\0"
    offset 8   format version   u32 LE
    offset 12  header length H  u64 LE    (at most MAX_HEADER_BYTES)
    offset 20  header           H bytes   msgpack map, keys sorted at every level, no extension types
    ...        zero padding to a multiple of ALIGNMENT
    ...        weight buffer    the constants, sorted by name, each at an ALIGNMENT-aligned offset
    end - 32   sha256 of every byte before it

Offsets must cover the buffer exactly and entries must be sorted and unique. Each weight carries its own sha256
(over dtype, shape and bytes, the digest the network's structural identity uses), the embedded manifest
carries its own, and the trailer covers every byte before it. Nothing in the file is ever executed: no
pickle, no code.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np
from pydantic import ValidationError

from reprobuild.digest import array_digest, little_endian, sha256_hex
from reprobuild.dtypes import dtype_name, np_dtype
from reprobuild.engine.plan import EngineHeader
from reprobuild.errors import FormatError

MAGIC = b"RPBENGN\x00"
FORMAT_VERSION = 3
ALIGNMENT = 64
MAX_HEADER_BYTES = 64 * 1024 * 1024
_PREAMBLE = struct.Struct("<8sIQ")
_DIGEST = 32


def _align(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


def _canonical(value: Any) -> Any:
    """Dicts with sorted keys and tuples as lists, recursively: msgpack then writes the same bytes every time."""
    if isinstance(value, Mapping):
        return {str(k): _canonical(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def weight_table(weights: Mapping[str, np.ndarray],
                 digests: Mapping[str, str] | None = None) -> tuple[list[dict[str, Any]], int]:
    """The header's weight entries (sorted by name, aligned offsets) and the buffer size they tile.

    Each weight's sha256 is ``array_digest`` (dtype, shape and bytes); pass ``digests`` when they are known
    already (the network has them) to skip hashing the weights again."""
    table, offset = [], 0
    for name in sorted(weights):
        arr = weights[name]
        table.append({
            "name": name, "dtype": dtype_name(arr.dtype), "shape": list(arr.shape), "offset": offset,
            "nbytes": arr.nbytes, "sha256": digests[name] if digests is not None else array_digest(arr),
        })
        offset += _align(arr.nbytes)
    return table, offset


def engine_header(header: Mapping[str, Any], weights: Mapping[str, np.ndarray],
                  digests: Mapping[str, str] | None = None) -> EngineHeader:
    """The validated header an engine of these parts has (what ``serialize_engine`` writes)."""
    table, nbytes = weight_table(weights, digests)
    try:
        return EngineHeader.model_validate({**header, "weights": table, "buffer_nbytes": nbytes})
    except ValidationError as exc:  # a builder bug, not a user error: fail before writing anything
        raise AssertionError(f"the builder produced an invalid engine header: {exc}") from exc


def serialize_engine(header: Mapping[str, Any], weights: Mapping[str, np.ndarray],
                     digests: Mapping[str, str] | None = None) -> bytes:
    """Pack a header (everything but the weight table) and the weights into engine bytes.

    The weights are hashed at most once (not at all when ``digests`` are given) and copied exactly once, into
    the returned bytes.
    """
    validated = engine_header(header, weights, digests)
    full = validated.model_dump()
    chunks: list[Any] = []
    for entry in full["weights"]:
        arr = little_endian(weights[entry["name"]])
        chunks += [memoryview(arr.reshape(-1).view(np.uint8).data), b"\0" * (_align(arr.nbytes) - arr.nbytes)]
    packed = msgpack.packb(_canonical(full), use_bin_type=True)
    head = _PREAMBLE.pack(MAGIC, FORMAT_VERSION, len(packed)) + packed
    parts = [head, b"\0" * (_align(len(head)) - len(head)), *chunks]
    trailer = hashlib.sha256()
    for part in parts:
        trailer.update(part)
    return b"".join([*parts, trailer.digest()])


def deserialize_engine(data: bytes | bytearray | memoryview) -> tuple[EngineHeader, dict[str, np.ndarray]]:
    """Check and split engine bytes into the validated header and read-only weight arrays (zero-copy)."""
    data = bytes(data)
    if len(data) < _PREAMBLE.size + _DIGEST:
        raise FormatError(f"engine is {len(data)} bytes, too short to be a reprobuild engine (truncated?)")
    magic, version, header_len = _PREAMBLE.unpack_from(data)
    if magic != MAGIC:
        raise FormatError(f"not a reprobuild engine: the file starts with {magic!r}, expected {MAGIC!r}")
    if version != FORMAT_VERSION:
        newer = "newer than" if version > FORMAT_VERSION else "different from"
        raise FormatError(f"engine format version {version} is {newer} the version this runtime reads "
                          f"({FORMAT_VERSION}); rebuild the engine with this reprobuild, or use a matching one")
    if header_len > MAX_HEADER_BYTES:
        raise FormatError(f"engine header claims {header_len} bytes; the limit is {MAX_HEADER_BYTES}")
    buffer_start = _align(_PREAMBLE.size + header_len)
    if buffer_start + _DIGEST > len(data):
        raise FormatError("engine is truncated: the header runs past the end of the file")
    if hashlib.sha256(data[:-_DIGEST]).digest() != data[-_DIGEST:]:
        raise FormatError("engine is corrupted or truncated: its sha256 trailer does not match its contents")
    try:
        raw = msgpack.unpackb(data[_PREAMBLE.size:_PREAMBLE.size + header_len], raw=False, strict_map_key=True,
                              use_list=True)
    except Exception as exc:
        raise FormatError(f"engine header is not valid msgpack: {exc}") from None
    try:
        header = EngineHeader.model_validate(raw)
    except ValidationError as exc:
        raise FormatError(f"engine header does not match format version {FORMAT_VERSION}:\n{exc}") from None
    if any(data[_PREAMBLE.size + header_len:buffer_start]):
        raise FormatError("engine header padding is not zero")
    buffer = memoryview(data)[buffer_start:-_DIGEST]
    if len(buffer) != header.buffer_nbytes:
        raise FormatError(f"engine weight buffer is {len(buffer)} bytes; its header records {header.buffer_nbytes}")
    if sha256_hex(header.manifest) != header.manifest_sha256:
        raise FormatError("engine's embedded manifest does not match its recorded sha256")
    return header, _weights(header, buffer)


def _weights(header: EngineHeader, buffer: memoryview) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    expected, previous = 0, None
    for w in header.weights:
        if previous is not None and w.name <= previous:
            raise FormatError(f"engine weights are not sorted and unique by name ({previous!r} then {w.name!r})")
        previous = w.name
        dtype = np_dtype(w.dtype).newbyteorder("<")
        if w.offset != expected or w.nbytes != int(np.prod(w.shape, dtype=np.int64)) * dtype.itemsize:
            raise FormatError(f"engine weight {w.name!r}: offset {w.offset} / size {w.nbytes} do not tile the "
                              f"buffer (expected offset {expected}, size for {w.shape} {w.dtype})")
        array = np.frombuffer(buffer[w.offset:w.offset + w.nbytes], dtype=dtype).reshape(w.shape)
        array = array.astype(np_dtype(w.dtype), copy=False)
        if array_digest(array) != w.sha256:
            raise FormatError(f"engine weight {w.name!r} does not match its sha256")
        out[w.name] = array
        expected = _align(w.offset + w.nbytes)
    if expected != len(buffer):
        raise FormatError(f"engine weights cover {expected} bytes of a {len(buffer)}-byte buffer; they must tile "
                          "it exactly")
    return out


def engine_sha256(data: bytes) -> str:
    """The digest `reprobuild build` prints: sha256 of the whole engine file, as `sha256sum` would print it."""
    return sha256_hex(data)

"""Mutations for the fuzz tests: hypothesis strategies that damage bytes and structured documents.

A structured mutation picks one place in a nested document (a dict key, a list element, the whole document) and
deletes it, renames it, replaces it with a hostile value (huge and negative integers, NaN, deep nesting, long
strings, wrong types) or duplicates it. Bytes mutations flip bits, truncate, splice and zero ranges.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from typing import Any

import msgpack
from hypothesis import strategies as st

from reprobuild.digest import sha256_hex

#: Integers that break arithmetic: zero, negatives, int32/int64/uint64 edges, above int64, 5000 digits.
NASTY_INTS = st.sampled_from([0, -1, 1, 2, 3, 7, 64, 65, 255, 2**31 - 1, 2**31, 2**32, 2**40, 2**62, 2**63 - 1,
                              2**63, 2**64 - 1, -(2**63), -(2**31)])
NASTY_FLOATS = st.sampled_from([0.0, -0.0, 0.5, -1.5, 1e308, float("nan"), float("inf"), float("-inf"), 1e-320])
NAMES = st.sampled_from(["", "x", "input", "output", "weight", "conv1", "strides", "axis", "pads", "group",
                         "tactic", "name", "shape", "dtype", "float32", "float16", "cuda", "cpu", "int64", "../x",
                         "\u00e9\u00e8", "a" * 300])


def _deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


LEAVES = st.one_of(st.none(), st.booleans(), NASTY_INTS, st.integers(), NASTY_FLOATS, NAMES,
                   st.binary(max_size=16),
                   # deep-copied: a mutation must never change a value the strategy hands out again
                   st.sampled_from([[], {}, _deep(200), [0] * 70, [2**40] * 4]).map(copy.deepcopy))
VALUES = st.recursive(LEAVES, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(NAMES, inner, max_size=3)), max_leaves=6)


def _paths(doc: Any, prefix: tuple[Any, ...] = (), out: list[tuple[Any, ...]] | None = None) -> list[tuple[Any, ...]]:
    """Every place in ``doc`` (depth-first, in a fixed order): the document itself, then each key/element."""
    out = [] if out is None else out
    out.append(prefix)
    if isinstance(doc, dict):
        for key in sorted(doc, key=str):
            _paths(doc[key], (*prefix, key), out)
    elif isinstance(doc, list):
        for i, item in enumerate(doc):
            _paths(item, (*prefix, i), out)
    return out


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        doc = doc[key]
    return doc


@st.composite
def mutated_document(draw: Callable[..., Any], doc: Any, max_mutations: int = 3) -> Any:
    """``doc`` (a nested dict/list, not modified) with one to ``max_mutations`` structural mutations."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, max_mutations))):
        paths = _paths(doc)
        path = paths[draw(st.integers(0, len(paths) - 1))]
        action = draw(st.sampled_from(["replace", "replace", "delete", "rename", "duplicate", "add"]))
        if not path:
            if action in ("replace", "delete"):
                doc = draw(VALUES)
            continue
        parent, key = _parent(doc, path), path[-1]
        if action == "replace":
            parent[key] = draw(VALUES)
        elif action == "delete":
            del parent[key]
        elif action == "rename" and isinstance(parent, dict):
            parent[draw(NAMES)] = parent.pop(key)
        elif action == "duplicate" and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))
        elif action == "add":
            target = parent[key]
            if isinstance(target, dict):
                target[draw(NAMES)] = draw(VALUES)
            elif isinstance(target, list):
                target.append(draw(VALUES))
    return doc


@st.composite
def mutated_bytes(draw: Callable[..., Any], data: bytes) -> bytes:
    """``data`` with a bit flipped, a truncation, a zeroed or duplicated range, or random bytes spliced in."""
    n = len(data)
    action = draw(st.sampled_from(["flip", "flip", "truncate", "zero", "splice", "duplicate"]))
    i = draw(st.integers(0, max(n - 1, 0)))
    if action == "flip":
        bits = bytearray(data)
        bits[i] ^= 1 << draw(st.integers(0, 7))
        return bytes(bits)
    if action == "truncate":
        return data[:i]
    j = min(n, i + draw(st.integers(1, 64)))
    if action == "zero":
        return data[:i] + bytes(j - i) + data[j:]
    if action == "duplicate":
        return data[:j] + data[i:j] + data[j:]
    return data[:i] + draw(st.binary(min_size=1, max_size=32)) + data[i:]


# --- engine files --------------------------------------------------------------------------------------------------

_PREAMBLE_BYTES = 20


def split_engine(data: bytes) -> tuple[dict[str, Any], bytes]:
    """An engine file's header (as a dict) and its weight buffer, for re-signing after a mutation."""
    header_len = int.from_bytes(data[12:20], "little")
    header = msgpack.unpackb(data[_PREAMBLE_BYTES:_PREAMBLE_BYTES + header_len], raw=False)
    start = -(-(_PREAMBLE_BYTES + header_len) // 64) * 64
    return header, data[start:-32]


def resign_engine(data: bytes, header: Any, buffer: bytes, fix_manifest_digest: bool) -> bytes:
    """Engine bytes with this header and buffer and a valid trailer: the mutation reaches past the integrity
    check. With ``fix_manifest_digest`` the embedded manifest's own sha256 is recomputed too."""
    if fix_manifest_digest and isinstance(header, dict) and isinstance(header.get("manifest"), (bytes, str)):
        manifest = header["manifest"]
        header["manifest_sha256"] = sha256_hex(manifest if isinstance(manifest, bytes) else manifest.encode())
    packed = msgpack.packb(header, use_bin_type=True)
    head = data[:12] + len(packed).to_bytes(8, "little") + packed
    body = head + bytes(-len(head) % 64) + buffer
    return body + hashlib.sha256(body).digest()

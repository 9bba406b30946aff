"""Generic mutations for the fuzz targets, drawn from a ``random.Random``: hostile values, structural damage to a
nested document, bytes damage, and re-signing an engine whose header was edited.

Every function takes the generator it draws from, so a case is a function of its seed: the campaign seeds one
generator per case (``random.Random(f"{seed}/{target}/{index}")``), and the same case always makes the same
file. A structural mutation picks one place in a nested document (a dict key, a list element, the whole
document) and deletes it, renames it, replaces it with a hostile value (huge and negative integers, NaN, deep
nesting, long strings, wrong types, terminal escapes) or duplicates it. Bytes mutations flip bits, truncate,
splice and zero ranges.
"""

from __future__ import annotations

import copy
import hashlib
import random
from collections.abc import Sequence
from typing import Any, TypeVar

import msgpack

from reprobuild.core.digest import sha256_hex

T = TypeVar("T")

#: Integers that break arithmetic: zero, negatives, int32/int64/uint64 edges, above int64.
NASTY_INTS = (0, -1, 1, 2, 3, 7, 64, 65, 255, 2**31 - 1, 2**31, 2**32, 2**40, 2**43, 2**62, 2**63 - 1, 2**63,
              2**64 - 1, -(2**63), -(2**31))
NASTY_FLOATS = (0.0, -0.0, 0.5, -1.5, 1e308, float("nan"), float("inf"), float("-inf"), 1e-320)
#: Names: empty, plausible, path-like, non-ASCII, long, and ones a terminal would interpret.
NAMES = ("", "x", "input", "output", "weight", "conv1", "strides", "axis", "pads", "group", "tactic", "name",
         "shape", "dtype", "float32", "float16", "cuda", "cpu", "int64", "../x", "\u00e9\u00e8", "a" * 300,
         "\x1b[2J\x1b[31mred", "line\nbreak", "\u202eevil")


def pick(rng: random.Random, items: Sequence[T]) -> T:
    return items[rng.randrange(len(items))]


def deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def hostile_leaf(rng: random.Random) -> Any:
    kind = rng.randrange(9)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return pick(rng, NASTY_INTS)
    if kind == 3:
        return rng.randint(-(2**63), 2**63 - 1)
    if kind == 4:
        return pick(rng, NASTY_FLOATS)
    if kind == 5:
        return pick(rng, NAMES)
    if kind == 6:
        return rng.randbytes(rng.randrange(17))
    if kind == 7:
        return copy.deepcopy(pick(rng, ([], {}, [0] * 70, [2**40] * 4)))
    return deep(pick(rng, (2, 70, 200)))


def hostile_value(rng: random.Random, depth: int = 0) -> Any:
    """A leaf, or (rarely, two levels at most) a small list or dict of them."""
    kind = rng.randrange(6) if depth < 2 else 0
    if kind == 4:
        return [hostile_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 5:
        return {pick(rng, NAMES): hostile_value(rng, depth + 1) for _ in range(rng.randrange(3))}
    return hostile_leaf(rng)


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


def mutate_document(rng: random.Random, doc: Any, max_mutations: int = 3) -> Any:
    """``doc`` (a nested dict/list, not modified) with one to ``max_mutations`` structural mutations."""
    doc = copy.deepcopy(doc)
    for _ in range(rng.randint(1, max_mutations)):
        paths = _paths(doc)
        path = pick(rng, paths)
        action = pick(rng, ("replace", "replace", "delete", "rename", "duplicate", "add"))
        if not path:
            if action in ("replace", "delete"):
                doc = hostile_value(rng)
            continue
        parent, key = _parent(doc, path), path[-1]
        if action == "replace":
            parent[key] = hostile_value(rng)
        elif action == "delete":
            del parent[key]
        elif action == "rename" and isinstance(parent, dict):
            parent[pick(rng, NAMES)] = parent.pop(key)
        elif action == "duplicate" and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))
        elif action == "add":
            target = parent[key]
            if isinstance(target, dict):
                target[pick(rng, NAMES)] = hostile_value(rng)
            elif isinstance(target, list):
                target.append(hostile_value(rng))
    return doc


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    """``data`` with a bit flipped, a truncation, a zeroed or duplicated range, or random bytes spliced in."""
    n = len(data)
    action = pick(rng, ("flip", "flip", "truncate", "zero", "splice", "duplicate"))
    i = rng.randrange(max(n, 1))
    if action == "flip":
        bits = bytearray(data)
        if bits:
            bits[i] ^= 1 << rng.randrange(8)
        return bytes(bits)
    if action == "truncate":
        return data[:i]
    j = min(n, i + rng.randint(1, 64))
    if action == "zero":
        return data[:i] + bytes(j - i) + data[j:]
    if action == "duplicate":
        return data[:j] + data[i:j] + data[j:]
    return data[:i] + rng.randbytes(rng.randint(1, 32)) + data[i:]


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
    check. With ``fix_manifest_digest`` the embedded manifest's own sha256 is recomputed too. Raises what
    msgpack raises for a value it cannot write (an integer of 2**64 or more)."""
    if fix_manifest_digest and isinstance(header, dict) and isinstance(header.get("manifest"), (bytes, str)):
        manifest = header["manifest"]
        header["manifest_sha256"] = sha256_hex(manifest if isinstance(manifest, bytes) else manifest.encode())
    packed = msgpack.packb(header, use_bin_type=True)
    head = data[:12] + len(packed).to_bytes(8, "little") + packed
    body = head + bytes(-len(head) % 64) + buffer
    return body + hashlib.sha256(body).digest()

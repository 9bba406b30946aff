"""Reading and writing manifests: canonical JSON, atomic writes, bounded reads, versioned loading.

Loading is bounded before it is parsed (:func:`load_json`, also used for the manifest an engine embeds): at most
``MAX_MANIFEST_BYTES`` bytes, arrays and objects nested at most ``MAX_JSON_DEPTH`` deep and at most
``MAX_JSON_CONTAINERS`` of them (checked by a linear scan of the bytes outside strings *before* ``json.loads``,
which recurses once per level), integers within
``[-2**63, 2**64)`` (a longer digit string is refused before it is converted) and finite floats (no ``NaN`` or
``Infinity`` literal, no ``1e999``). Each violation is a :class:`FormatError` naming it.

Loading then checks ``schema_version``: a future version is refused with a message saying to upgrade; an older
one is lifted one version at a time through ``MIGRATIONS`` before validation. Validation stops at the first bad
entry of each list and map, and the error lists the first few problems and counts the rest
(``reprobuild.core.validation``): a list of a million bad entries costs one error, not a million.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from typing import Any

import numpy as np
from pydantic import ValidationError

from reprobuild.core.digest import canonical_json, sha256_hex
from reprobuild.core.errors import FormatError
from reprobuild.core.fileio import atomic_write, read_bounded
from reprobuild.core.validation import validation_summary
from reprobuild.manifest.models import SCHEMA_VERSION, Manifest, Pinned

MAX_MANIFEST_BYTES = 256 * 1024 * 1024
#: Arrays and objects nest at most this deep; a manifest nests about 7 levels (pinned.layers[i].tactic.parameters).
MAX_JSON_DEPTH = 64
#: Arrays and objects a manifest may hold: what bounds the memory a parsed manifest takes (``{}`` is two bytes of
#: JSON but about 64 bytes in Python). A manifest holds about 60 per layer, evidence included.
MAX_JSON_CONTAINERS = 8_000_000
#: Integers anywhere in a manifest lie in [MIN_JSON_INT, MAX_JSON_INT]: int64 and uint64 values (seeds, byte counts).
MIN_JSON_INT = -(2**63)
MAX_JSON_INT = 2**64 - 1
_MAX_INT_CHARS = len(str(MIN_JSON_INT))  # 20 characters: the longest in-range integer literal ("-9223372036854775808")


def _json_shape(text: str) -> tuple[int, int]:
    """How deep arrays and objects nest in ``text``, and how many there are, counting only brackets outside strings;
    linear, no recursion (``(0, 0)`` when there are too few brackets anywhere to nest deeper than
    ``MAX_JSON_DEPTH``, and so too few to be too many).

    A quote preceded by an odd run of backslashes is escaped: turning each escaped backslash (two backslashes),
    then each backslash-quote left, into two neutral characters leaves only the quotes that open or close strings;
    splitting on them puts the text outside strings at the even indices. (Where the text is not valid JSON this
    may miscount after the first invalid character, but ``json.loads`` stops there, so it never nests deeper
    than counted.)"""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return 0, 0  # the fast path
    plain = text.replace("\\\\", "__").replace('\\"', "__")
    outside = "".join(plain.split('"')[0::2])
    brackets = re.sub(r"[^\[\]{}]+", "", outside)
    chars = np.frombuffer(brackets.encode("ascii"), dtype=np.uint8)
    opening = (chars == ord("[")) | (chars == ord("{"))
    steps = np.where(opening, 1, -1).astype(np.int8)
    deepest = level = 0
    for start in range(0, steps.size, 1 << 22):  # in chunks: a cumulative sum of int64 per byte would be 8x the text
        levels = np.cumsum(steps[start:start + (1 << 22)], dtype=np.int64) + level
        deepest, level = max(deepest, int(levels.max())), int(levels[-1])
    return deepest, int(np.count_nonzero(opening))


def _parse_int(literal: str, source: str) -> int:
    digits = literal.lstrip("-")
    if len(literal) > _MAX_INT_CHARS:
        raise FormatError(f"{source} has an integer of {len(digits)} digits ({digits[:12]}...); integers in a "
                          f"manifest lie within [-2**63, 2**64) (at most 20 digits). It is corrupted or not a "
                          "reprobuild manifest; regenerate it")
    value = int(literal)
    if not MIN_JSON_INT <= value <= MAX_JSON_INT:
        raise FormatError(f"{source} has the integer {value}, outside [-2**63, 2**64) where every integer of a "
                          "manifest lies. It is corrupted or not a reprobuild manifest; regenerate it")
    return value


def _parse_float(literal: str, source: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise FormatError(f"{source} has the number {literal[:40]}, which overflows a float; numbers in a manifest "
                          "are finite. It is corrupted or not a reprobuild manifest; regenerate it")
    return value


def _refuse_constant(literal: str, source: str) -> Any:
    raise FormatError(f"{source} has the literal {literal}, which is not JSON (RFC 8259) and which no manifest "
                      "holds: every number in a manifest is finite. It is corrupted or was not written by "
                      "reprobuild; regenerate it")


def load_json(data: bytes, source: str = "manifest") -> Any:
    """Parse manifest JSON within the caps (size, nesting depth, integer range, finite numbers), or raise
    :class:`FormatError` naming the one exceeded."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise FormatError(f"{source} is {len(data)} bytes; a manifest may be at most {MAX_MANIFEST_BYTES} bytes")
    try:
        text = data.decode(json.detect_encoding(data))
    except UnicodeDecodeError as exc:
        raise FormatError(f"{source} is not valid JSON: it is not UTF-8 text ({exc})") from None
    depth, containers = _json_shape(text)
    if containers > MAX_JSON_CONTAINERS:
        raise FormatError(f"{source} holds {containers} arrays and objects; a manifest holds at most "
                          f"{MAX_JSON_CONTAINERS} (about 60 per layer: {MAX_JSON_CONTAINERS // 60} layers). It is "
                          "corrupted or not a reprobuild manifest; regenerate it")
    if depth > MAX_JSON_DEPTH:
        raise FormatError(f"{source} nests arrays and objects {depth} levels deep; a manifest nests at most "
                          f"{MAX_JSON_DEPTH} (about 7 in practice). It is corrupted or not a reprobuild manifest; "
                          "regenerate it")
    try:
        return json.loads(text, parse_int=lambda s: _parse_int(s, source),
                          parse_float=lambda s: _parse_float(s, source),
                          parse_constant=lambda s: _refuse_constant(s, source))
    except json.JSONDecodeError as exc:
        raise FormatError(f"{source} is not valid JSON: {exc}") from None
    except RecursionError:  # unreachable under MAX_JSON_DEPTH; a typed error all the same
        raise FormatError(f"{source} nests too deep to parse; a manifest nests at most {MAX_JSON_DEPTH} "
                          "levels") from None


def _v1_to_v2(document: dict[str, Any]) -> dict[str, Any]:
    """Version 2 records pass versions, each layer's ONNX nodes, pinned inputs and opset upgrades. A version-1
    build ran version 1 of each pass, and each of its layers came from the ONNX node of the same name."""
    pinned = document.get("pinned")
    if isinstance(pinned, dict):
        config = pinned.get("config")
        if isinstance(config, dict) and isinstance(config.get("passes"), list):
            config["passes"] = [{"name": p, "version": 1} if isinstance(p, str) else p for p in config["passes"]]
        if isinstance(pinned.get("model"), dict):
            pinned["model"].setdefault("upgraded_from_opset", None)
        for layer in pinned.get("layers") or []:
            if isinstance(layer, dict):
                layer.setdefault("onnx_nodes", [layer.get("name")])
        pinned.setdefault("pinned_inputs", [])
    return {**document, "schema_version": 2}


_PRECISION = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64"}


def _v2_to_v3(document: dict[str, Any]) -> dict[str, Any]:
    """Version 3 records the precision flag and each layer's precision, whether contexts run as CUDA graphs, and
    the cuBLAS workspace. A version-2 build was strict fp32 with no graphs and no cuBLAS workspace of its own;
    each layer computed in its output's dtype."""
    pinned = document.get("pinned")
    if isinstance(pinned, dict):
        config = pinned.get("config")
        if isinstance(config, dict):
            config.setdefault("precision", "fp32")
            config.setdefault("cuda_graph", False)
        for layer in pinned.get("layers") or []:
            if isinstance(layer, dict):
                outputs = layer.get("outputs") or [{}]
                dtype = outputs[0].get("dtype") if isinstance(outputs[0], dict) else None
                layer.setdefault("precision", _PRECISION.get(str(dtype), str(dtype)))
        memory = pinned.get("memory")
        if isinstance(memory, dict):
            memory.setdefault("library_workspace_bytes", 0)
        pinned.setdefault("execution", {"cuda_graph": False, "reason": "recorded by schema 2: eager launches"})
    return {**document, "schema_version": 3}


def _v3_to_v4(document: dict[str, Any]) -> dict[str, Any]:
    """Version 4 records each tactic by ``code_sha256`` (exactly what it runs) and each compiled kernel per symbol.
    A version-3 document's digests covered source text (docstrings, comments, whole files) and cannot be turned
    into those: its tactic references and kernel records are kept as recorded, as ``LegacyTacticRef`` and
    ``LegacyKernelSourceRecord``, which the models tell apart by their fields, and which a replay or a
    verification refuses, naming each tactic."""
    return {**document, "schema_version": 4}


#: MIGRATIONS[n] lifts a version-n document to version n + 1.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4}


def manifest_to_json(manifest: Manifest) -> bytes:
    """Sorted keys, two-space indent, trailing newline: deterministic and pleasant to diff in review."""
    data = manifest.model_dump(mode="json")
    return (json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode()


def pinned_bytes(pinned: Pinned) -> bytes:
    """The canonical (compact) JSON of the pinned part: what the engine embeds and what is hashed."""
    return canonical_json(pinned.model_dump(mode="json"))


def pinned_sha256(pinned: Pinned) -> str:
    return sha256_hex(pinned_bytes(pinned))


def write_manifest(path: str | os.PathLike[str], manifest: Manifest) -> None:
    atomic_write(path, manifest_to_json(manifest))


def upgrade(document: dict[str, Any], source: str = "manifest") -> dict[str, Any]:
    version = document.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise FormatError(f"{source} has no integer schema_version (found {version!r}); is it a reprobuild manifest?")
    if version > SCHEMA_VERSION:
        raise FormatError(
            f"{source} has schema_version {version}, newer than this reprobuild understands ({SCHEMA_VERSION}); "
            "upgrade reprobuild to read it"
        )
    while version < SCHEMA_VERSION:
        if version not in MIGRATIONS:
            raise FormatError(f"{source} has schema_version {version}, which cannot be migrated (oldest supported: 1)")
        document = MIGRATIONS[version](document)
        version = int(document["schema_version"])
    return document


#: How a schema error is introduced: the checks stop at the first bad entry of each list, so that a list of a
#: million bad entries costs one error, not a million (``reprobuild.core.validation``).
_SCHEMA_ERRORS = " (each list and map is checked up to its first bad entry)"


def manifest_from_json(data: bytes, source: str = "manifest") -> Manifest:
    document = load_json(data, source)
    if not isinstance(document, dict):
        raise FormatError(f"{source} is JSON but not an object; a manifest is an object with a schema_version")
    document = upgrade(document, source)
    try:
        return Manifest.model_validate(document)
    except ValidationError as exc:
        raise FormatError(f"{source} does not match the manifest schema{_SCHEMA_ERRORS}:\n"
                          f"{validation_summary(exc)}") from None


def pinned_from_json(data: bytes, source: str = "embedded manifest") -> Pinned:
    """The pinned manifest an engine embeds, read within the same caps as a manifest file (:func:`load_json`)."""
    document = load_json(bytes(data), source)
    if not isinstance(document, dict):
        raise FormatError(f"{source} is JSON but not an object; the embedded manifest is the pinned part, an object")
    try:
        return Pinned.model_validate(document)
    except ValidationError as exc:
        raise FormatError(f"{source} does not match the manifest schema{_SCHEMA_ERRORS}:\n"
                          f"{validation_summary(exc)}") from None


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    return manifest_from_json(read_bounded(path, MAX_MANIFEST_BYTES, "manifest"), f"manifest {os.fspath(path)!r}")

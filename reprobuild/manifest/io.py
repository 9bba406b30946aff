"""Reading and writing manifests: canonical JSON, atomic writes, bounded reads, versioned loading.

Loading checks ``schema_version`` first: a future version is refused with a message saying to upgrade; an older
one is lifted one version at a time through ``MIGRATIONS`` before validation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from reprobuild.digest import canonical_json, sha256_hex
from reprobuild.errors import FormatError
from reprobuild.fileio import atomic_write, read_bounded
from reprobuild.manifest.models import SCHEMA_VERSION, Manifest, Pinned

MAX_MANIFEST_BYTES = 256 * 1024 * 1024

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


#: MIGRATIONS[n] lifts a version-n document to version n + 1.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2, 2: _v2_to_v3}


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


def manifest_from_json(data: bytes, source: str = "manifest") -> Manifest:
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise FormatError(f"{source} is JSON but not an object; a manifest is an object with a schema_version")
    document = upgrade(document, source)
    try:
        return Manifest.model_validate(document)
    except ValidationError as exc:
        raise FormatError(f"{source} does not match the manifest schema:\n{exc}") from None


def pinned_from_json(data: bytes, source: str = "embedded manifest") -> Pinned:
    try:
        return Pinned.model_validate_json(data)
    except ValidationError as exc:
        raise FormatError(f"{source} does not match the manifest schema:\n{exc}") from None


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    return manifest_from_json(read_bounded(path, MAX_MANIFEST_BYTES, "manifest"), f"manifest {os.fspath(path)!r}")

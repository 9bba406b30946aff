"""The build manifest: pydantic models (``SCHEMA_VERSION``) and their canonical JSON form, read within caps."""

from __future__ import annotations

from reprobuild.manifest.io import (
    load_json,
    manifest_from_json,
    manifest_to_json,
    pinned_bytes,
    pinned_sha256,
    read_manifest,
    write_manifest,
)
from reprobuild.manifest.models import MAX_SEED, SCHEMA_VERSION, Manifest, Pinned, TacticRef

__all__ = [
    "MAX_SEED",
    "SCHEMA_VERSION",
    "Manifest",
    "Pinned",
    "TacticRef",
    "load_json",
    "manifest_from_json",
    "manifest_to_json",
    "pinned_bytes",
    "pinned_sha256",
    "read_manifest",
    "write_manifest",
]

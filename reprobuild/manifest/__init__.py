"""The build manifest: pydantic models (schema v1) and their canonical JSON form."""

from __future__ import annotations

from reprobuild.manifest.io import (
    manifest_from_json,
    manifest_to_json,
    pinned_bytes,
    pinned_sha256,
    read_manifest,
    write_manifest,
)
from reprobuild.manifest.models import SCHEMA_VERSION, Manifest, Pinned, TacticRef

__all__ = [
    "SCHEMA_VERSION",
    "Manifest",
    "Pinned",
    "TacticRef",
    "manifest_from_json",
    "manifest_to_json",
    "pinned_bytes",
    "pinned_sha256",
    "read_manifest",
    "write_manifest",
]

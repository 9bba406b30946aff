"""The manifest: canonical JSON, round trip, strict schema, versioned loading with a migration hook."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reprobuild.builder import Builder, BuilderConfig
from reprobuild.core.errors import FormatError
from reprobuild.frontend import network_from_onnx_path
from reprobuild.manifest import (
    Manifest,
    manifest_from_json,
    manifest_to_json,
    pinned_bytes,
    read_manifest,
    write_manifest,
)
from reprobuild.manifest import io as manifest_io
from tests.helpers import EXAMPLES


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    network, _ = network_from_onnx_path(f"{EXAMPLES}/mlp.onnx")
    return Builder().build(network, BuilderConfig(backend="cpu", iterations=2)).manifest


def test_round_trip_through_a_file(manifest: Manifest, tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    write_manifest(path, manifest)
    assert read_manifest(path) == manifest
    assert path.read_bytes() == manifest_to_json(manifest)
    assert not list(tmp_path.glob(".reprobuild-*")), "the atomic write left its temp file behind"


def test_json_is_canonical(manifest: Manifest) -> None:
    text = manifest_to_json(manifest).decode()
    assert text.endswith("\n")
    assert json.dumps(json.loads(text), sort_keys=True, indent=2, ensure_ascii=False) + "\n" == text
    compact = pinned_bytes(manifest.pinned)
    assert compact == json.dumps(json.loads(compact), sort_keys=True, separators=(",", ":")).encode()


def test_pinned_part_has_no_floats_outside_the_config(manifest: Manifest) -> None:
    def floats(value: Any, path: str) -> list[str]:
        if isinstance(value, float):
            return [path]
        if isinstance(value, dict):
            return [p for k, v in value.items() for p in floats(v, f"{path}.{k}")]
        if isinstance(value, list):
            return [p for i, v in enumerate(value) for p in floats(v, f"{path}[{i}]")]
        return []

    pinned = manifest.pinned.model_dump(mode="json")
    del pinned["config"]
    assert floats(pinned, "pinned") == []


def _document(manifest: Manifest) -> dict[str, Any]:
    return json.loads(manifest_to_json(manifest))


def test_future_schema_version_is_refused_with_advice(manifest: Manifest) -> None:
    doc = _document(manifest)
    doc["schema_version"] = 99
    with pytest.raises(FormatError, match=r"schema_version 99, newer than this reprobuild understands.*upgrade"):
        manifest_from_json(json.dumps(doc).encode())


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("schema_version"), "no integer schema_version"),
    (lambda d: d["pinned"].update(extra=1), "extra"),
    (lambda d: d["pinned"]["layers"][0].update(workspace_bytes=-1), "workspace_bytes"),
    (lambda d: d["pinned"]["layers"][0]["tactic"].update(code_sha256="xyz"), "code_sha256"),
])
def test_invalid_documents_are_format_errors(manifest: Manifest, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    doc = _document(manifest)
    mutate(doc)
    with pytest.raises(FormatError, match=message):
        manifest_from_json(json.dumps(doc).encode())


def test_not_json_and_not_an_object_are_format_errors() -> None:
    with pytest.raises(FormatError, match="not valid JSON"):
        manifest_from_json(b"{nope")
    with pytest.raises(FormatError, match="not an object"):
        manifest_from_json(b"[1, 2]")


def test_older_versions_are_lifted_one_step_at_a_time(manifest: Manifest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The migration hook: a version-0 document (hypothetical) is upgraded through MIGRATIONS[0]."""
    doc = _document(manifest)
    doc["schema_version"] = 0
    doc["pinned"]["legacy_field"] = doc["pinned"].pop("kernel_sources")

    def lift_0_to_1(old: dict[str, Any]) -> dict[str, Any]:
        new = dict(old, schema_version=1)
        new["pinned"] = dict(old["pinned"])
        new["pinned"]["kernel_sources"] = new["pinned"].pop("legacy_field")
        return new

    monkeypatch.setitem(manifest_io.MIGRATIONS, 0, lift_0_to_1)
    assert manifest_from_json(json.dumps(doc).encode()) == manifest
    monkeypatch.delitem(manifest_io.MIGRATIONS, 0)
    with pytest.raises(FormatError, match="cannot be migrated"):
        manifest_from_json(json.dumps(doc).encode())

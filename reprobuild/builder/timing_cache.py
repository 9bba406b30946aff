"""A timing cache: measured samples reused across builds, keyed by what decides them.

The key is a digest of the layer's signature (op, attributes, shapes, dtypes, weight digests), the tactic by
value, the environment fingerprint and the timing configuration, so a cached timing is only reused where it
would have been measured the same way. The file is JSON with a format name and version; writes are atomic.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reprobuild.core.digest import digest_of
from reprobuild.core.errors import FormatError
from reprobuild.core.fileio import atomic_write, read_bounded
from reprobuild.manifest.io import load_json

FORMAT = "reprobuild-timing-cache"
VERSION = 1
MAX_BYTES = 256 * 1024 * 1024


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    tactic: str
    samples_ns: list[int] = Field(min_length=1)


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    format: str
    version: int
    entries: dict[str, _Entry]


class TimingCache:
    """In-memory cache, loaded from and saved to a file. Safe to share between threads."""

    def __init__(self, entries: Mapping[str, tuple[str, list[int]]] | None = None) -> None:
        self._entries = dict(entries or {})
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(signature: str, tactic_ref: Mapping[str, Any], environment: Mapping[str, str],
            timing: Mapping[str, int]) -> str:
        return digest_of({"format": [FORMAT, VERSION], "signature": signature, "tactic": dict(tactic_ref),
                          "environment": dict(environment), "timing": dict(timing)})

    def get(self, key: str) -> list[int] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self.hits += 1
            return list(entry[1])

    def put(self, key: str, label: str, samples: list[int]) -> None:
        with self._lock:
            self._entries[key] = (label, list(samples))

    def __len__(self) -> int:
        return len(self._entries)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TimingCache:
        """The cache in ``path``; an empty cache when the file does not exist yet."""
        if not os.path.exists(path):
            return cls()
        data = read_bounded(path, MAX_BYTES, "timing cache")
        try:
            raw = load_json(data, f"timing cache {os.fspath(path)!r}")  # the manifests' depth and number caps
        except FormatError as exc:
            raise FormatError(f"{exc}; delete it to start a new one") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise FormatError(f"{os.fspath(path)!r} is not a reprobuild timing cache")
        if raw.get("version") != VERSION:
            raise FormatError(f"timing cache {os.fspath(path)!r} has format version {raw.get('version')!r}; this "
                              f"reprobuild reads version {VERSION}. Delete the file to start a new cache")
        try:
            parsed = _File.model_validate(raw)
        except ValidationError as exc:
            raise FormatError(f"timing cache {os.fspath(path)!r} is malformed:\n{exc}") from None
        return cls({k: (e.tactic, e.samples_ns) for k, e in parsed.entries.items()})

    def save(self, path: str | os.PathLike[str]) -> None:
        with self._lock:
            entries = {k: {"tactic": label, "samples_ns": samples}
                       for k, (label, samples) in sorted(self._entries.items())}
        document = {"format": FORMAT, "version": VERSION, "entries": entries}
        atomic_write(path, (json.dumps(document, indent=1, sort_keys=True) + "\n").encode())

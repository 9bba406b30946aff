"""Whether a manifest and an engine are a pair: the manifest records the engine's sha256."""

from __future__ import annotations


def pair_mismatch(recorded_sha256: str, engine_sha256: str, engine_label: str) -> str | None:
    """The message for a manifest whose recorded engine digest is not this engine's (None when they pair)."""
    if recorded_sha256 == engine_sha256:
        return None
    return (f"the manifest records engine sha256 {recorded_sha256[:16]}..., but {engine_label} is "
            f"{engine_sha256[:16]}...: they are not a pair; rebuild, or pass the manifest written with this engine")

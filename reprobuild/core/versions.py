"""The installed versions of reprobuild's dependencies, read from package metadata without importing them.

``reprobuild --version`` prints them (importing NumPy, onnx or CuPy would take seconds, and could fail on a
broken install that the user is trying to diagnose); ``reprobuild attest`` records some. Standard library only.
"""

from __future__ import annotations

import importlib.metadata
import platform

#: The distributions whose versions ``--version`` shows, by the name users know them by, each with the
#: distribution names it is published under (CuPy has one per CUDA major version).
DEPENDENCIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("numpy", ("numpy",)),
    ("onnx", ("onnx",)),
    ("pydantic", ("pydantic",)),
    ("msgpack", ("msgpack",)),
    ("ml_dtypes", ("ml_dtypes", "ml-dtypes")),
    ("cupy", ("cupy-cuda13x", "cupy-cuda12x", "cupy-cuda11x", "cupy")),
)


def installed(distribution: str) -> str | None:
    """The version of an installed distribution, or None when it is not installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def installed_any(distributions: tuple[str, ...]) -> tuple[str, str] | None:
    """(distribution, version) of the first of ``distributions`` that is installed, or None."""
    return next(((d, v) for d in distributions if (v := installed(d)) is not None), None)


def version_text(version: str) -> str:
    """What ``reprobuild --version`` prints: reprobuild's version on the first line (what scripts read), then
    Python's and each dependency's ("not installed" for an optional one that is not, such as CuPy)."""
    rows = [("python", platform.python_version())]
    for name, distributions in DEPENDENCIES:
        found = installed_any(distributions)
        rows.append((name, "not installed" if found is None else
                     found[1] if found[0] == name else f"{found[1]} ({found[0]})"))
    width = max(len(name) for name, _ in rows)
    return "\n".join([f"reprobuild {version}", *(f"  {name:<{width}}  {value}" for name, value in rows)])

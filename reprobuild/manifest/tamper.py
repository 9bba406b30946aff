"""A manifest that cannot be edited unnoticed: its pinned part against the one its engine embeds.

An engine embeds the pinned part of its manifest (canonical JSON) and records that part's sha256
(``manifest_sha256``), under the engine's own sha256 trailer. A manifest file that claims to be the engine's
record (it records the engine's digest, or is given as its record: ``verify --against``, ``attest --manifest``)
must hold exactly that pinned part: any edit of dtypes, shapes, precision, memory figures, environment, tactics or
golden digests changes its digest. :func:`pinned_differences` names every field that differs, so the report says
what was edited, not only that something was; :func:`check_record` raises :class:`ManifestEditedError` (exit 4).
"""

from __future__ import annotations

from typing import Any

from reprobuild.core.errors import ManifestEditedError
from reprobuild.core.textformat import first_lines, printable
from reprobuild.manifest.io import pinned_sha256
from reprobuild.manifest.models import Pinned

#: How many differing fields a message lists before it counts the rest.
MAX_LISTED = 12


def _flatten(value: Any, path: str, out: dict[str, Any]) -> None:
    """Leaf values by path: ``layers[fc1].outputs[a1].dtype``, ``environment.numpy``, ``golden.layers[fc1].sha256``
    (list entries that have a name are addressed by it, when the names are unique, and their order is the value
    ``path(order)``; a list of scalars, such as a shape, is one value)."""
    if isinstance(value, dict) and value:
        for key in sorted(value):
            _flatten(value[key], f"{path}.{key}" if path else str(key), out)
    elif isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):  # a list of scalars is a value
        names = [v.get("name") if isinstance(v, dict) else None for v in value]
        named = all(isinstance(n, str) for n in names) and len(set(names)) == len(names)
        if named:  # entries addressed by name lose their order, which means something (passes, layers)
            out[f"{path}(order)"] = names
        for i, item in enumerate(value):
            _flatten(item, f"{path}[{names[i] if named else i}]", out)
    else:
        out[path] = value


def pinned_differences(recorded: Pinned, embedded: Pinned) -> list[tuple[str, Any, Any]]:
    """(field path, the value ``recorded`` holds, the value ``embedded`` holds) of every leaf that differs; a side
    that lacks the field has None."""
    a: dict[str, Any] = {}
    b: dict[str, Any] = {}
    _flatten(recorded.model_dump(mode="json"), "", a)
    _flatten(embedded.model_dump(mode="json"), "", b)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _show(value: Any) -> str:
    if value is None:
        return "(absent)"
    if isinstance(value, str) and len(value) > 40:  # a digest: its first 16 characters tell it apart
        return printable(repr(value[:16] + "..."))
    text = repr(value)
    return printable(text if len(text) <= 60 else text[:57] + "...")


def describe(differences: list[tuple[str, Any, Any]], recorded: str = "the manifest",
             embedded: str = "the engine") -> str:
    """One line per differing field (the first ``MAX_LISTED``), then how many more."""
    return first_lines(differences, MAX_LISTED,
                       lambda d: f"  pinned.{printable(d[0])}: {recorded} records {_show(d[1])}, {embedded} "
                                 f"{_show(d[2])}", "field(s)")


def check_record(recorded: Pinned, embedded: Pinned, embedded_sha256: str, manifest_label: str,
                 engine_label: str) -> None:
    """Refuse a manifest offered as an engine's record whose pinned part is not the one the engine embeds (whose
    sha256, ``embedded_sha256``, the engine records): a :class:`ManifestEditedError` naming every differing field."""
    if pinned_sha256(recorded) == embedded_sha256:
        return
    differences = pinned_differences(recorded, embedded)
    what = (f"{len(differences)} field(s) differ:\n{describe(differences)}" if differences else
            "no field differs, but the engine's embedded copy is not in canonical form (edited inside the engine)")
    raise ManifestEditedError(
        f"{manifest_label} is not the record of {engine_label}: the engine records the sha256 of its manifest's "
        f"pinned part ({embedded_sha256[:16]}...), and this manifest's pinned part has another "
        f"({pinned_sha256(recorded)[:16]}...); it was edited after the build, so nothing it says can be trusted "
        f"for this engine. {what}\nUse the manifest the build wrote beside the engine, or the engine itself (its "
        "embedded manifest is the record: reprobuild inspect --json ENGINE)")

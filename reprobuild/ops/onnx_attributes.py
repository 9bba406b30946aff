"""The ONNX attributes of the ops reprobuild defines, read from ``onnx_attributes.json`` (no onnx needed).

The table is generated from ``onnx.defs`` by ``python -m reprobuild.ops.onnx_schema``: per op and per op version
that its definition lists, each attribute's kind, required flag and default. :func:`onnx_attributes` turns one
op's versions into the ``Attr`` mapping an :class:`~reprobuild.ops.base.OpDef` holds, each attribute with the
range of listed versions that have it, so that no definition restates what ONNX already says.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence, Set
from typing import Any

from reprobuild.core.errors import ReprobuildError
from reprobuild.ops.attr import ABSENT, REQUIRED, Attr

TABLE_FILE = "onnx_attributes.json"
TABLE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), TABLE_FILE)
REGENERATE = "python -m reprobuild.ops.onnx_schema"


class AttributeTableError(ReprobuildError):
    """The generated attribute table does not cover an op definition as it is (regenerate it)."""


@functools.cache
def _document() -> dict[str, Any]:
    with open(TABLE_PATH, encoding="utf-8") as f:
        document: dict[str, Any] = json.load(f)
    return document


def table_onnx_version() -> str:
    """The onnx version the table was generated from."""
    return str(_document()["onnx_version"])


def _value(kind: str, value: Any) -> Any:
    """A default in the form a node's decoded attribute has: tuples for the list kinds."""
    if kind in ("ints", "floats", "strings"):
        return tuple(value)
    return value


def _attr(kind: str, spec: dict[str, Any], since: int, until: int | None) -> Attr:
    if spec["required"]:
        default = REQUIRED
    elif "default" in spec:
        default = _value(kind, spec["default"])
    else:
        default = ABSENT
    return Attr(kind, default, since=since, until=until)


def onnx_attributes(op: str, versions: Sequence[int], overridden: Set[str] = frozenset()) -> dict[str, Attr] | None:
    """The attributes of default-domain op ``op`` over its listed ``versions``, from the table; None when the table
    does not have the op (one ONNX does not define, or one added since the table was generated).

    An attribute that the first listed version has counts from version 1 (``Attr``'s default), one that appears
    later from the first listed version that has it, and it ends (``until``) at the first listed version after
    that which lacks it. An attribute whose kind, required flag or default differs between versions, or that comes
    back after it was dropped, cannot be one ``Attr``: an AttributeTableError says so, unless the definition
    declares it itself (``overridden``: the names of its ``attribute_overrides``, left out here)."""
    by_version = _document()["ops"].get(op)
    if by_version is None:
        return None
    listed = sorted(versions)
    missing = [v for v in listed if str(v) not in by_version]
    if missing:
        raise AttributeTableError(f"{TABLE_FILE} lacks version(s) {missing} of {op} (it has "
                                  f"{', '.join(sorted(by_version, key=int))}); run `{REGENERATE}` and commit the table")
    out: dict[str, Attr] = {}
    for name in sorted({n for v in listed for n in by_version[str(v)]} - set(overridden)):
        have = [v for v in listed if name in by_version[str(v)]]
        lacking = [v for v in listed if v > have[0] and v not in have]
        until = lacking[0] if lacking else None
        specs = {json.dumps(by_version[str(v)][name], sort_keys=True) for v in have}
        if (until is not None and have[-1] > until) or len(specs) > 1:
            raise AttributeTableError(
                f"{op}'s attribute {name!r} changes between versions {have} (kind, required flag or default, or it "
                "returns after it was dropped), which one Attr cannot say; declare it in the definition's "
                "attribute_overrides, or split the definition by version")
        spec = by_version[str(have[0])][name]
        out[name] = _attr(spec["kind"], spec, 1 if have[0] == listed[0] else have[0], until)
    return out

"""What an op attribute is: :class:`Attr`, with the ``REQUIRED`` and ``ABSENT`` defaults.

Its own module so that both the op definitions (``base``) and the generated ONNX attribute table
(``onnx_attributes``) can make them without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_REQUIRED = object()
_ABSENT = object()


@dataclass(frozen=True)
class Attr:
    """An ONNX attribute: its kind, its default (``REQUIRED``, ``ABSENT`` for "no value", or a value), and the
    op versions that have it: ``since`` <= version < ``until``."""

    kind: str  # int, float, string, ints, floats, strings, tensor
    default: Any = _ABSENT
    since: int = 1
    until: int | None = None

    def exists_in(self, version: int) -> bool:
        return self.since <= version and (self.until is None or version < self.until)


REQUIRED = _REQUIRED
ABSENT = _ABSENT

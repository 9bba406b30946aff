"""Plain text for terminals: tables, names made safe to print, and summaries of validation errors.

Names come from files a user may not trust (ONNX models, engines, manifests): a tensor named ``"\\x1b[2J"``
would clear the terminal of whoever runs ``reprobuild inspect``, and a right-to-left override would make a
report read backwards. :func:`printable` escapes every character that is not printable (control characters,
Unicode format characters such as U+202E) the way ``repr`` does; :func:`table` applies it to every cell, and the
CLI to every error message it prints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

#: How many validation errors a summary lists before it only counts the rest.
MAX_LISTED_ERRORS = 10
#: The longest error location or message a summary shows of one error (a key may be megabytes long).
_MAX_ERROR_CHARS = 200


def printable(text: object, keep_newlines: bool = False) -> str:
    """``text`` with every non-printable character escaped as ``repr`` escapes it (``\\x1b``, ``\\u202e``,
    ``\\n``); printable text, non-ASCII letters included, is unchanged. ``keep_newlines`` leaves line breaks (for
    multi-line messages)."""
    s = str(text)
    if s.isprintable():
        return s
    if keep_newlines:
        return "\n".join(printable(line) for line in s.split("\n"))
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)


def table(rows: Sequence[Sequence[str]], header: Sequence[str] | None = None, indent: str = "") -> str:
    """Columns padded to their widest cell, two spaces apart; a dashed rule under the header. Cells are made
    :func:`printable`."""
    lines_in = [[printable(c) for c in r] for r in ([header] if header else []) + list(rows)]
    if not lines_in:
        return ""
    widths = [max(len(r[i]) for r in lines_in) for i in range(len(lines_in[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in lines_in]
    if header:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(indent + line for line in lines)


def _clip(text: str) -> str:
    text = printable(text)
    return text if len(text) <= _MAX_ERROR_CHARS else text[:_MAX_ERROR_CHARS] + "..."


def first_lines(items: Sequence[T], limit: int, line: Callable[[T], str], noun: str = "") -> str:
    """``line(item)`` for the first ``limit`` items, one per line, then ``  ... and K more [noun]`` for the rest: a
    message of bounded length however many there are (only the lines shown are formatted)."""
    lines = [line(item) for item in items[:limit]]
    if len(items) > limit:
        lines.append(f"  ... and {len(items) - limit} more{' ' + noun if noun else ''}")
    return "\n".join(lines)


def error_lines(errors: Iterable[Mapping[str, Any]], count: int, limit: int = MAX_LISTED_ERRORS) -> str:
    """The first ``limit`` of pydantic's errors (``ValidationError.errors(include_url=False,
    include_input=False)``), one ``location: message`` line each, then how many more there are: a few KB whatever
    the document, never the inputs themselves."""
    lines: list[str] = []
    for error in errors:
        if len(lines) == limit:
            break
        where = ".".join(str(part) for part in error.get("loc", ())) or "(the document)"
        lines.append(f"  {_clip(where)}: {_clip(str(error.get('msg', '')))}")
    if count > len(lines):
        lines.append(f"  ... and {count - len(lines)} more")
    return "\n".join(lines)

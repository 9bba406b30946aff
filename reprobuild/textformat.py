"""Plain-text tables: what the CLI and the error messages print."""

from __future__ import annotations

from collections.abc import Sequence


def table(rows: Sequence[Sequence[str]], header: Sequence[str] | None = None, indent: str = "") -> str:
    """Columns padded to their widest cell, two spaces apart; a dashed rule under the header."""
    lines_in = [list(header), *map(list, rows)] if header else [list(r) for r in rows]
    if not lines_in:
        return ""
    widths = [max(len(r[i]) for r in lines_in) for i in range(len(lines_in[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in lines_in]
    if header:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(indent + line for line in lines)

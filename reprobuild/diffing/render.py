"""Rendering a ManifestDiff: aligned text for a terminal (colour only there), markdown for pull requests, JSON.

Both text and markdown come from one list of sections (title, column names, rows), so they show the same facts.
"""

from __future__ import annotations

import json
from typing import Any

from reprobuild.core.textformat import printable
from reprobuild.diffing import FieldChange, ManifestDiff, TacticSide

Section = tuple[str, list[str], list[list[str]]]

RED, GREEN, BOLD, RESET = "\033[31m", "\033[32m", "\033[1m", "\033[0m"


def _value(value: Any) -> str:
    if value is None:
        return "(absent)"
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _short(digest: str | None) -> str:
    return digest[:12] if digest else "(absent)"


def _ms(ns: int | None) -> str:
    return f"{ns / 1e6:.4f} ms" if ns is not None else "-"


def _tactic(side: TacticSide) -> str:
    params = ", ".join(f"{k}={v}" for k, v in sorted(side.tactic.parameters.items()))
    return f"{side.tactic.label} (code {_short(side.tactic.digest)}{'; ' + params if params else ''})"


def _fields(changes: list[FieldChange], strip: str) -> list[list[str]]:
    return [[c.path.removeprefix(strip), _value(c.a), _value(c.b)] for c in changes]


def sections(d: ManifestDiff) -> list[Section]:
    """The non-empty sections, in reading order."""
    out: list[Section] = []

    def add(title: str, header: list[str], rows: list[list[str]]) -> None:
        if rows:  # names and values come from the files: escape what a terminal would act on
            out.append((title, header, [[printable(cell) for cell in row] for row in rows]))

    add("EDITED: the manifest's pinned part is not the one the engine embeds", ["field", "a", "b"],
        _fields(d.edited, ""))
    add("Model", ["field", "a", "b"], _fields(d.model, "model."))
    add("Build config", ["field", "a", "b"], _fields(d.config, "config."))
    add("Environment", ["field", "a", "b"], _fields(d.environment, "environment."))
    add("Bindings", ["field", "a", "b"], _fields(d.bindings, "bindings."))
    add("Optimization profiles (dynamic shapes)", ["field", "a", "b"], _fields(d.profiles, "profiles."))
    add("Layers added (in b only)", ["layer", "op", "tactic", "key"],
        [[r.name, r.op, r.tactic, _short(r.key)] for r in d.layers_added])
    add("Layers removed (in a only)", ["layer", "op", "tactic", "key"],
        [[r.name, r.op, r.tactic, _short(r.key)] for r in d.layers_removed])
    add("Layers renamed (same structure)", ["a", "b", "op", "key"],
        [[r.a, r.b, r.op, _short(r.key)] for r in d.layers_renamed])
    add("Tactic changes", ["layer", "op", "a", "b", "a median", "b median"],
        [[t.layer, t.op, _tactic(t.a), _tactic(t.b), _ms(t.a.median_ns), _ms(t.b.median_ns)]
         for t in d.tactic_changes])
    add("Other layer changes", ["field", "a", "b"], _fields(d.layer_changes, "layers."))
    add("Kernel sources", ["kernel", "a", "b"],
        [[k.file, f"{_short(k.a.digest)} {' '.join(k.a.compile_options)}".strip() if k.a else "(absent)",
          f"{_short(k.b.digest)} {' '.join(k.b.compile_options)}".strip() if k.b else "(absent)"]
         for k in d.kernel_sources])
    add("Memory", ["field", "a", "b"], _fields(d.memory, "memory."))
    add("Golden outputs", ["field", "a", "b"],
        [[c.path.removeprefix("golden."), _short(c.a) if "." in c.path.removeprefix("golden.") else _value(c.a),
          _short(c.b) if "." in c.path.removeprefix("golden.") else _value(c.b)] for c in d.golden])
    add("Engine", ["field", "a", "b"], _fields(d.engine, "engine."))
    add("Evidence", ["field", "a", "b"], _fields(d.evidence, "evidence."))
    return out


def to_text(d: ManifestDiff, color: bool = False) -> str:
    paint = (lambda code, text: f"{code}{text}{RESET}") if color else (lambda code, text: text)
    lines = [paint(BOLD, f"reprobuild diff: {printable(d.summary)}"), f"  a  {printable(d.a)}",
             f"  b  {printable(d.b)}"]
    if d.ignored:
        lines.append(f"  ignored: {printable(', '.join(d.ignored))}")
    for title, header, rows in sections(d):
        lines += ["", paint(BOLD, title)]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        a_col, b_col = (header.index("a"), header.index("b")) if "a" in header and "b" in header else (-1, -1)
        lines.append("  " + "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
        for row in rows:
            cells = []
            for i, (cell, w) in enumerate(zip(row, widths)):
                text = cell.ljust(w)
                cells.append(paint(RED, text) if i == a_col else paint(GREEN, text) if i == b_col else text)
            lines.append(("  " + "  ".join(cells)).rstrip())
    return "\n".join(lines) + "\n"


def _md(cell: str) -> str:
    return cell.replace("|", "\\|")


def to_markdown(d: ManifestDiff) -> str:
    lines = [f"### reprobuild diff: {printable(d.summary)}", "", f"- **a**: `{printable(d.a)}`",
             f"- **b**: `{printable(d.b)}`"]
    if d.ignored:
        lines.append(f"- ignored: {', '.join(f'`{printable(i)}`' for i in d.ignored)}")
    for title, header, rows in sections(d):
        lines += ["", f"#### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def to_json(d: ManifestDiff) -> str:
    return json.dumps(d.model_dump(mode="json"), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

"""What ``reprobuild conformance`` prints: the case table, the summary, the table by op (``docs/conformance.md``)."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict

from reprobuild.conformance.runner import RESULTS, Result
from reprobuild.core.textformat import table


def _err(value: float | None) -> str:
    return "" if value is None else f"{value:.2g}"


def _first_line(text: str, width: int = 110) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[:width - 3] + "..."


def summary_counts(results: Sequence[Result]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for r in results:
        out.setdefault(r.suite, dict.fromkeys(RESULTS, 0))[r.result] += 1
    return out


def by_op(results: Sequence[Result]) -> dict[str, dict[str, int]]:
    """For each op, how the cases that use it ended (a case counts for every op it contains)."""
    out: dict[str, dict[str, int]] = {}
    for r in results:
        for op in r.ops:
            out.setdefault(op, dict.fromkeys(RESULTS, 0))[r.result] += 1
    return dict(sorted(out.items()))


def reason_key(r: Result) -> str:
    """A refusal's reason with names and numbers blurred, to group like with like."""
    text = _first_line(r.detail, 400)
    text = re.sub(r"node '[^']*'", "node '…'", text)
    text = re.sub(r"'[^']*'", "'…'", text)
    text = re.sub(r"\[[^\]]*\]", "[…]", text)
    return re.sub(r"\d+", "N", text)[:160]


def to_text(results: Sequence[Result], verbose: bool) -> str:
    rows = []
    for r in results:
        if not verbose and r.result == "pass":
            continue
        detail = _first_line(r.detail)
        if r.pinned:
            detail = f"[pinned {', '.join(r.pinned)}] {detail}".strip()
        rows.append([f"{r.suite}:{r.case}", ",".join(r.ops)[:40], ",".join(r.dtypes)[:24], r.result.upper()
                     if r.result in ("fail", "error") else r.result, _err(r.max_abs), _err(r.max_rel), detail])
    lines = []
    if rows:
        lines.append(table(rows, ["case", "ops", "dtypes", "result", "max abs", "max rel", "detail"]))
        lines.append("")
    lines.append(summary_text(results))
    return "\n".join(lines) + "\n"


def summary_text(results: Sequence[Result]) -> str:
    rows = [[suite, str(sum(c.values())), *(str(c[k]) for k in RESULTS)]
            for suite, c in summary_counts(results).items()]
    return table(rows, ["suite", "cases", *RESULTS])


def _finite(value: object) -> object:
    """JSON has no infinity: an error that is infinite (a shape or dtype mismatch) is written as the string."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def to_json(results: Sequence[Result]) -> str:
    return json.dumps({"summary": summary_counts(results), "results": [_finite(asdict(r)) for r in results]},
                      indent=2, sort_keys=True, allow_nan=False, default=str) + "\n"


def to_markdown(results: Sequence[Result], header: str = "") -> str:
    lines = [header.rstrip(), ""] if header else []
    lines += ["## Summary", "", "| suite | cases | pass | fail (wrong result) | refused (typed error) | error (bug) |",
              "|---|---:|---:|---:|---:|---:|"]
    for suite, c in summary_counts(results).items():
        lines.append(f"| {suite} | {sum(c.values())} | {c['pass']} | {c['fail']} | {c['refused']} | {c['error']} |")
    pinned = sum(1 for r in results if r.result == "pass" and r.pinned)
    lines += ["", f"{pinned} of the passing cases pinned an input's value at build time (`--input-value`, "
                  "TensorRT's shape-input values): engines have fixed shapes, so an input that decides a shape "
                  "must be known when the engine is built.", ""]
    lines += ["## By op", "", "A case counts for every op it contains.", "",
              "| op | cases | pass | fail | refused | error |", "|---|---:|---:|---:|---:|---:|"]
    for op, c in by_op(results).items():
        lines.append(f"| {op} | {sum(c.values())} | {c['pass']} | {c['fail']} | {c['refused']} | {c['error']} |")
    reasons = Counter(reason_key(r) for r in results if r.result == "refused")
    if reasons:
        lines += ["", "## Why cases are refused", "", "| cases | reason (names and numbers blurred) |", "|---:|---|"]
        for reason, n in reasons.most_common():
            lines.append(f"| {n} | {reason.replace('|', '/')} |")
    bad = [r for r in results if r.result in ("fail", "error")]
    if bad:
        lines += ["", "## Wrong results and errors", "", "| case | result | detail |", "|---|---|---|"]
        for r in bad:
            lines.append(f"| {r.suite}:{r.case} | {r.result} | {_first_line(r.detail, 300).replace('|', '/')} |")
    return "\n".join(lines) + "\n"

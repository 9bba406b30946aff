"""What a fuzz case did, and the tally of a campaign.

Every case ends in one of:

* ``accepted``: the file or input was taken and everything asked of it ran;
* a refusal with a typed error: the ``ReprobuildError`` subclass's name (``FormatError``), or ``exit N`` when the
  case went through the command line and it exited with a documented code N (never 1);
* a failure, which the campaign reports with a reproducer:

  - ``untyped``: any other exception (``KeyError``, ``MemoryError``, ...), or the command line's exit 1;
  - ``unbounded``: a refusal whose message is longer than ``MAX_MESSAGE_BYTES``, or a case whose peak resident
    memory grew by more than its bound;
  - ``silent``: the case was accepted where it had to be refused (an oracle the target checks: an edited pinned
    part that ``verify --against`` or ``diff`` does not report, a file a model must not read, a terminal escape
    printed raw);
  - ``crash`` / ``timeout``: the worker process died (a signal, the per-case memory limit's kill) or ran past the
    per-case time limit; recorded by the campaign runner, which starts a new worker;
  - ``harness``: the fuzzer itself failed to make the case (a bug in ``tests/fuzz``, reported, never counted as
    reprobuild's).

The summary line is computed from the counts, never written by hand.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from reprobuild.core.errors import ReprobuildError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAILURES = ("untyped", "unbounded", "silent", "crash", "timeout", "harness")
#: A refusal's message longer than this is a failure: the million-entry header once gave 213 MB of text.
MAX_MESSAGE_BYTES = 64 * 1024
#: How many failures a report keeps in full (the others are counted by signature).
MAX_KEPT_FAILURES = 400


class Silent(Exception):
    """Raised by a target's oracle: the case was accepted where it had to be refused."""


class CliExit(Exception):
    """The command line exited with a documented, nonzero code (a typed refusal)."""

    def __init__(self, code: int, stderr: str) -> None:
        super().__init__(f"exit {code}: {stderr[-300:]}")
        self.code, self.stderr = code, stderr


class CliInternalError(Exception):
    """The command line exited 1 (an internal error): what its ``--debug`` traceback says."""

    def __init__(self, kind: str, message: str, where: str) -> None:
        super().__init__(message)
        self.kind, self.where = kind, where


class Skip(Exception):
    """The generator made something the harness cannot write (msgpack refuses 2**64): not a case."""


@dataclass
class Outcome:
    target: str
    index: int
    result: str  #: "accepted", a typed class or "exit N", or one of FAILURES
    kind: str = ""  #: failures: the exception's type
    where: str = ""  #: failures: the innermost reprobuild frame (file:function)
    message: str = ""  #: failures: the head of the message
    message_bytes: int = 0
    growth_bytes: int = 0  #: the case's peak resident memory minus its resident memory at the start
    peak_bytes: int = 0  #: the process's peak resident memory during the case

    @property
    def failed(self) -> bool:
        return self.result in FAILURES

    @property
    def signature(self) -> str:
        return f"{self.target} {self.result} {self.kind} at {self.where or '?'}"


def innermost(tb: Any) -> str:
    """file:function of the innermost frame in reprobuild's own code (not the tests'), where a failure arose."""
    where = ""
    for frame in traceback.extract_tb(tb):
        path = os.path.relpath(frame.filename, REPO)
        if not path.startswith(("..", "tests", os.sep)):
            where = f"{path}:{frame.name}"
    return where


def classify(target: str, index: int, exc: BaseException | None) -> Outcome:
    """The outcome of a case that ended with ``exc`` (None: accepted)."""
    if exc is None:
        return Outcome(target, index, "accepted")
    if isinstance(exc, CliExit):
        return _sized(Outcome(target, index, f"exit {exc.code}"), exc.stderr)
    if isinstance(exc, ReprobuildError):
        return _sized(Outcome(target, index, type(exc).__name__), _text(exc))
    if isinstance(exc, Silent):
        return Outcome(target, index, "silent", "Silent", "", str(exc)[:500])
    if isinstance(exc, CliInternalError):
        return Outcome(target, index, "untyped", exc.kind, exc.where, str(exc)[:500])
    return Outcome(target, index, "untyped", type(exc).__name__, innermost(exc.__traceback__), _text(exc)[:500])


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception as inner:  # a message that cannot even be made is a finding of its own
        return f"<str() of the error raised {type(inner).__name__}>"


def _sized(outcome: Outcome, message: str) -> Outcome:
    outcome.message_bytes = len(message.encode("utf-8", "replace"))
    if outcome.message_bytes > MAX_MESSAGE_BYTES:
        outcome.kind, outcome.where = outcome.result, "message"
        outcome.message = f"{outcome.message_bytes}-byte message: {message[:300]}"
        outcome.result = "unbounded"
    return outcome


def check_growth(outcome: Outcome, bound: int) -> Outcome:
    """An outcome that is not yet a failure becomes ``unbounded`` when the case's memory grew past ``bound``."""
    if not outcome.failed and outcome.growth_bytes > bound:
        outcome.kind, outcome.where = outcome.result, "memory"
        outcome.message = (f"peak resident memory grew by {outcome.growth_bytes} bytes; the bound for this case is "
                           f"{bound}")
        outcome.result = "unbounded"
    return outcome


@dataclass
class Tally:
    """Counts per target and result, the failures (in full up to a cap, all counted by signature), peaks."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    signatures: dict[str, int] = field(default_factory=dict)
    examples: dict[str, dict[str, Any]] = field(default_factory=dict)  #: signature -> its first failure
    peak_rss_bytes: int = 0
    max_growth: dict[str, list[int]] = field(default_factory=dict)  #: target -> [bytes, case index]

    def add(self, outcome: Outcome, reproducer: str = "") -> None:
        per_target = self.counts.setdefault(outcome.target, {})
        per_target[outcome.result] = per_target.get(outcome.result, 0) + 1
        self.peak_rss_bytes = max(self.peak_rss_bytes, outcome.peak_bytes)
        best = self.max_growth.setdefault(outcome.target, [0, -1])
        if outcome.growth_bytes > best[0]:
            best[:] = [outcome.growth_bytes, outcome.index]
        if outcome.failed:
            record = {**asdict(outcome), "reproducer": reproducer}
            self.signatures[outcome.signature] = self.signatures.get(outcome.signature, 0) + 1
            self.examples.setdefault(outcome.signature, record)
            if len(self.failures) < MAX_KEPT_FAILURES:
                self.failures.append(record)

    def merge(self, other: Tally) -> None:
        for target, results in other.counts.items():
            mine = self.counts.setdefault(target, {})
            for result, n in results.items():
                mine[result] = mine.get(result, 0) + n
        self.failures.extend(other.failures[:max(0, MAX_KEPT_FAILURES - len(self.failures))])
        for sig, n in other.signatures.items():
            self.signatures[sig] = self.signatures.get(sig, 0) + n
            self.examples.setdefault(sig, other.examples[sig])
        self.peak_rss_bytes = max(self.peak_rss_bytes, other.peak_rss_bytes)
        for target, (grown, index) in other.max_growth.items():
            if grown > self.max_growth.get(target, [0, -1])[0]:
                self.max_growth[target] = [grown, index]

    @property
    def cases(self) -> int:
        return sum(sum(r.values()) for r in self.counts.values())

    def describe_failures(self) -> str:
        """Each failure signature, how often it occurred, its first message and how to reproduce it."""
        lines = []
        for sig, n in sorted(self.signatures.items(), key=lambda kv: (-kv[1], kv[0])):
            example = self.examples[sig]
            lines.append(f"{n:7d}  {sig}\n         {example['message'][:240]!r}\n         {example['reproducer']}")
        return "\n".join(lines)

    def failed(self, kinds: Iterable[str] = FAILURES) -> int:
        return sum(n for r in self.counts.values() for k, n in r.items() if k in set(kinds))

    def counts_only(self) -> dict[str, dict[str, int]]:
        """What must be equal between two runs of the same campaign (memory figures vary, counts may not)."""
        return {t: dict(sorted(r.items())) for t, r in sorted(self.counts.items())}

    def summary(self) -> str:
        """One line computed from the counts: cases per target and result, failures by kind, peak memory."""
        parts = []
        for target, results in sorted(self.counts.items()):
            shown = ", ".join(f"{n} {result}" for result, n in sorted(results.items(), key=lambda kv: (-kv[1], kv[0])))
            parts.append(f"{target}: {sum(results.values())} ({shown})")
        failures = ", ".join(f"{self.failed([kind])} {kind}" for kind in FAILURES)
        return (f"fuzz: {self.cases} cases; {failures} ({len(self.signatures)} distinct); peak RSS "
                f"{self.peak_rss_bytes / 2**20:.0f} MiB; " + "; ".join(parts))

    def to_json(self) -> dict[str, Any]:
        return {"counts": self.counts_only(), "failures": self.failures,
                "signatures": dict(sorted(self.signatures.items())), "examples": dict(sorted(self.examples.items())),
                "peak_rss_bytes": self.peak_rss_bytes, "max_growth": dict(sorted(self.max_growth.items()))}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Tally:
        return cls({t: dict(r) for t, r in doc["counts"].items()}, list(doc["failures"]), dict(doc["signatures"]),
                   dict(doc["examples"]), int(doc["peak_rss_bytes"]),
                   {t: list(v) for t, v in doc["max_growth"].items()})

"""Logger and ErrorRecorder, after TensorRT's ``ILogger`` and ``IErrorRecorder``.

A Logger is handed to the Builder and the Runtime and inherited by every object they create. It is thread-safe:
several execution contexts may log from several threads at once.
"""

from __future__ import annotations

import enum
import sys
import threading
from typing import TextIO

from reprobuild.core.errors import ReprobuildError
from reprobuild.core.textformat import printable


class Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class Logger:
    """Writes messages at or above ``min_severity`` to ``stream`` (stderr by default), one whole line at a time."""

    def __init__(self, min_severity: Severity = Severity.WARNING, stream: TextIO | None = None) -> None:
        self.min_severity = min_severity
        self._stream = stream
        self._lock = threading.Lock()

    def log(self, severity: Severity, message: str) -> None:
        if severity > self.min_severity:
            return
        stream = self._stream if self._stream is not None else sys.stderr
        line = f"[reprobuild] [{severity.name}] {printable(message, keep_newlines=True)}\n"  # names may hold escapes
        with self._lock:
            stream.write(line)
            stream.flush()

    def error(self, message: str) -> None:
        self.log(Severity.ERROR, message)

    def warning(self, message: str) -> None:
        self.log(Severity.WARNING, message)

    def info(self, message: str) -> None:
        self.log(Severity.INFO, message)

    def verbose(self, message: str) -> None:
        self.log(Severity.VERBOSE, message)


class RecordingLogger(Logger):
    """Keeps every message in memory as well; what tests and notebooks use to look at a build's log."""

    def __init__(self, min_severity: Severity = Severity.VERBOSE) -> None:
        super().__init__(min_severity)
        self.records: list[tuple[Severity, str]] = []

    def log(self, severity: Severity, message: str) -> None:
        if severity > self.min_severity:
            return
        with self._lock:
            self.records.append((severity, message))

    def messages(self, severity: Severity | None = None) -> list[str]:
        with self._lock:
            return [m for s, m in self.records if severity is None or s == severity]


class ErrorRecorder:
    """Collects the errors raised by the objects it is attached to, like TensorRT's ``IErrorRecorder``.

    Attach one to a Builder or Runtime; the networks, configs, engines and contexts they create inherit it. The
    errors are still raised as exceptions; the recorder keeps a bounded history for later inspection.
    """

    def __init__(self, max_errors: int = 256) -> None:
        self.max_errors = max_errors
        self._errors: list[ReprobuildError] = []
        self._overflowed = False
        self._lock = threading.Lock()

    def report(self, error: ReprobuildError) -> None:
        with self._lock:
            if len(self._errors) >= self.max_errors:
                self._overflowed = True
                return
            self._errors.append(error)

    @property
    def num_errors(self) -> int:
        with self._lock:
            return len(self._errors)

    def get_error(self, index: int) -> ReprobuildError:
        with self._lock:
            return self._errors[index]

    def has_overflowed(self) -> bool:
        with self._lock:
            return self._overflowed

    def clear(self) -> None:
        with self._lock:
            self._errors.clear()
            self._overflowed = False

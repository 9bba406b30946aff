"""CUDA graph capture, and the device-synchronizing calls that must wait for it: below both the launch plans
(``launch``, which capture a context's run) and cuBLAS's handles (``cublas``, whose destruction synchronizes), so
that neither imports the other."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import Any

BoundLaunch = Callable[[Any], None]


#: Held while a thread captures a CUDA graph. Some calls synchronize the whole device (cuBLAS's handle destruction
#: does), which would invalidate a capture in progress in any thread: they run through :func:`outside_capture`.
CAPTURE_LOCK = threading.RLock()
_THREAD = threading.local()
_DEFERRED: list[Callable[[], None]] = []


def outside_capture(fn: Callable[[], None]) -> None:
    """Run ``fn`` (a device-synchronizing call) when no thread is capturing: now, after waiting for other threads'
    captures, or, when this thread is capturing (a garbage collection inside a capture), right after its capture."""
    if getattr(_THREAD, "capturing", False):
        _DEFERRED.append(fn)
        return
    with CAPTURE_LOCK:
        fn()


def capture(stream: Any, steps: Sequence[BoundLaunch], repeats: int = 1) -> Any:
    """A CUDA graph of ``steps`` run ``repeats`` times on ``stream`` (nothing runs while capturing): how a context
    captures its run and how the builder times a candidate. A step that fails ends the capture and its own error
    is raised (not the capture's "invalidated")."""
    with CAPTURE_LOCK:
        _THREAD.capturing = True
        try:
            stream.begin_capture()
            try:
                for _ in range(repeats):
                    for step in steps:
                        step(stream)
            except BaseException:
                with contextlib.suppress(Exception):
                    stream.end_capture()
                raise
            return stream.end_capture()
        finally:
            _THREAD.capturing = False
            while _DEFERRED:
                _DEFERRED.pop(0)()

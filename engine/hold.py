"""Which thread an execution context belongs to, and until when.

TensorRT's contract is that an execution context is used by one thread at a time and that ``enqueue``'s outputs
stay valid until the next ``enqueue``. reprobuild's ``enqueue`` returns the context's own output buffers (so that
``torch.from_dlpack`` shares them without a copy), so a context is not free when ``enqueue`` returns: another
thread's run would overwrite those buffers before their reader has them. The thread that enqueues therefore keeps
the context (a *hold*) until it consumes the outputs:

- ``to_host(outputs)`` copies them and ends the hold; ``release()`` ends it without a copy;
- the thread's own next call (``enqueue`` again, ``execute``, ``execute_traced``) takes the context over, and its
  run replaces the outputs, as in TensorRT;
- ``synchronize()`` waits for the stream and keeps the hold (the buffers are still being read);
- a thread that ends while it holds a context lets it go: the next thread to call takes it over (a thread that
  Python's ``threading`` did not start, one made in C, is never seen to end: it calls ``release()``).

Any call from another thread while the hold is on, or while a call is running, is refused with a ``UsageError``
that says which thread holds the context and what ends the hold; it never waits and never races. ``execute`` and
``execute_traced`` copy their outputs before they return, so they hold the context only while they run.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator


class Hold:
    """The thread that holds a context (None: free) and whether one of its calls is running now."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._holder: threading.Thread | None = None
        self._running = False

    @contextlib.contextmanager
    def take(self, refuse: Callable[[str], Exception], keep: bool | None = False) -> Iterator[None]:
        """The context for the calling thread for the block; ``refuse(why)`` is raised when another thread holds
        it or a call of this thread is still running (a call from ``enqueue``'s ``after_layer``). After the block,
        the thread keeps the context when ``keep`` is true and the block succeeded, lets it go when false, and
        keeps what it had before when None."""
        me = threading.current_thread()
        with self._guard:
            holder, running = self._holder, self._running
            mine = holder is me
            taken = holder is not None and not mine and holder.is_alive()
            if not taken and not running:
                self._holder, self._running = me, True
        if taken:
            assert holder is not None
            raise refuse(f"thread {holder.name!r} " + ("is running it" if running else
                         "holds it: it enqueued a run and has not yet consumed the outputs (its to_host(outputs), "
                         "release() or its next run end the hold)"))
        if running:
            raise refuse("this thread is already running it: a callback of its run (after_layer) may not call the "
                         "context again")
        done = False
        try:
            yield
            done = True
        finally:
            kept = mine if keep is None else bool(keep) and done
            with self._guard:
                self._running = False
                self._holder = me if kept else None

"""Running fuzz cases: one case (made, run, classified, its memory measured), and a campaign of them in forked
worker processes.

Workers are forked from the process that built the seeds. Each limits its address space (``RLIMIT_AS``: what it
had at the fork plus the campaign's ``memory_limit``), so a resource bomb ends in a MemoryError or a killed worker,
never in the machine's swap; resets the kernel's peak-RSS mark before each case (``/proc/self/clear_refs``) and
reads it after, so every case's own memory growth is measured; and is replaced after a case that died, ran out of
memory or ran past the case timeout. Work is handed out in chunks of ``CHUNK`` cases; a chunk counts once all its
cases are in, and the report records the chunks done, so that an interrupted campaign resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import random
import resource
import selectors
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from tests.fuzz import targets
from tests.fuzz.case import Target
from tests.fuzz.exercise import Context
from tests.fuzz.outcome import Outcome, Skip, Tally, check_growth, classify

CHUNK = 100
DEFAULT_MEMORY_LIMIT = 2 * 2**30


# --- one case ------------------------------------------------------------------------------------------------------

def _status(field_name: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> None:
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")


def _empty(directory: str) -> None:
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            path = os.path.join(directory, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(path)


def make_case(target: Target, seed: int, index: int, ctx: Context) -> Any:
    _empty(os.path.join(ctx.scratch, "case"))
    return target.make(random.Random(f"{seed}/{target.name}/{index}"), ctx)


def run_case(target: Target, seed: int, index: int, ctx: Context) -> Outcome:
    """Make case ``index`` of ``target`` and run it: its outcome, memory growth and peak included."""
    try:
        case = make_case(target, seed, index, ctx)
    except Skip:
        return Outcome(target.name, index, "skipped")
    except Exception as exc:  # a bug of the fuzzer itself: reported, never counted as reprobuild's
        return Outcome(target.name, index, "harness", type(exc).__name__, "", traceback.format_exc()[-500:])
    _reset_peak()
    start = _status("VmRSS")
    error: BaseException | None = None
    try:
        case.run()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # SystemExit and reprobuild's Terminated included: anything a case raises
        error = exc
    outcome = classify(target.name, index, error)
    outcome.peak_bytes = _status("VmHWM")
    outcome.growth_bytes = max(0, outcome.peak_bytes - start)
    if error is not None and outcome.failed:
        outcome.message = f"{outcome.message} [{'; '.join(case.notes)[:300]}]"
    return check_growth(outcome, case.growth_bound)


def reproducer(seed: int, outcome: Outcome) -> str:
    return f"python -m tests.fuzz.campaign --seed {seed} --replay {outcome.target}:{outcome.index} --write DIR"


# --- workers -------------------------------------------------------------------------------------------------------

Chunk = tuple[str, int, int]  #: (target, first index, end index)


@dataclass
class _Worker:
    pid: int
    fd: int
    chunk: Chunk
    jobs: list[int]  #: the chunk's indices this worker has yet to finish
    log: str
    current: int | None = None  #: the case it is running
    started: float = 0.0
    timed_out: bool = False
    buffer: bytes = b""


def _limit_memory(headroom: int) -> None:
    limit = _status("VmSize") + headroom
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))


def _worker_main(fd: int, target: Target, jobs: list[int], seed: int, ctx: Context, headroom: int, log: str) -> None:
    """The body of a forked worker: run the jobs, one JSON line per event on ``fd``, then exit."""
    faulthandler.disable()  # pytest's, which would print a crashing case's traceback into the test's output
    out = os.fdopen(fd, "w", buffering=1)
    with open(log, "ab") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
    warnings.simplefilter("ignore")
    _limit_memory(headroom)
    for index in jobs:
        out.write(json.dumps({"start": index}) + "\n")
        outcome = run_case(target, seed, index, ctx)
        out.write(json.dumps({"done": asdict(outcome)}) + "\n")
        if outcome.kind == "MemoryError" or outcome.result == "harness":
            break  # a fresh worker for the rest: no heap fragments or half-made state carried over
    out.flush()


def _spawn(chunk: Chunk, jobs: list[int], seed: int, seeds: Any, scratch: str, headroom: int) -> _Worker:
    read, write = os.pipe()
    directory = tempfile.mkdtemp(prefix="worker-", dir=scratch)
    log = os.path.join(directory, "worker.log")
    pid = os.fork()
    if pid == 0:  # the worker
        code = 0
        try:
            os.close(read)
            ctx = Context(seeds, directory)
            _worker_main(write, targets.BY_NAME[chunk[0]], jobs, seed, ctx, headroom, log)
        except BaseException:
            code = 70
        finally:
            os._exit(code)
    os.close(write)
    os.set_blocking(read, False)
    return _Worker(pid, read, chunk, list(jobs), log)


def _tail(path: str) -> str:
    with contextlib.suppress(OSError), open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 400))
        return f.read().decode("utf-8", "replace").strip().replace("\n", " | ")
    return ""


def _chunks(plan: dict[str, int], done: set[Chunk]) -> Iterator[Chunk]:
    """Chunks of every target, interleaved so that an interrupted campaign has covered every target."""
    per_target = {name: [(name, start, min(start + CHUNK, n)) for start in range(0, n, CHUNK)]
                  for name, n in plan.items()}
    longest = max((len(c) for c in per_target.values()), default=0)
    for i in range(longest):
        for name in plan:
            if i < len(per_target[name]) and per_target[name][i] not in done:
                yield per_target[name][i]


@dataclass
class Campaign:
    """A campaign: ``plan`` (cases per target) from ``seed``, in ``workers`` forked processes."""

    plan: dict[str, int]
    seed: int = 0
    workers: int = 1
    memory_limit: int = DEFAULT_MEMORY_LIMIT
    case_timeout: float = 300.0
    report: str | None = None
    progress: bool = False
    argv: list[str] = field(default_factory=list)
    tally: Tally = field(default_factory=Tally)
    done: set[Chunk] = field(default_factory=set)
    wall_seconds: float = 0.0
    _partial: dict[Chunk, Tally] = field(default_factory=dict, repr=False)  #: chunks under way
    _left: dict[Chunk, int] = field(default_factory=dict, repr=False)  #: their cases not in yet

    def resume(self, path: str) -> None:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        if doc["seed"] != self.seed or doc["plan"] != self.plan:
            raise SystemExit(f"{path} is a campaign of seed {doc['seed']} and plan {doc['plan']}; this one is seed "
                             f"{self.seed}, plan {self.plan}: give the same arguments, or another --report")
        self.tally = Tally.from_json(doc["tally"])
        self.done = {(str(t), int(a), int(b)) for t, a, b in doc["done_chunks"]}
        self.wall_seconds = float(doc["wall_seconds"])

    def run(self, seeds: Any) -> Tally:
        """Run every chunk not done yet; the tally of the whole campaign (resumed part included)."""
        started = time.monotonic() - self.wall_seconds
        scratch = tempfile.mkdtemp(prefix="reprobuild-fuzz-")
        pending: list[tuple[Chunk, list[int]]] = [(c, list(range(c[1], c[2]))) for c in _chunks(self.plan, self.done)]
        self._left = {c: len(jobs) for c, jobs in pending}
        active: dict[int, _Worker] = {}
        selector = selectors.DefaultSelector()
        last_write = time.monotonic()
        try:
            while pending or active:
                while pending and len(active) < self.workers:
                    chunk, jobs = pending.pop(0)
                    w = _spawn(chunk, jobs, self.seed, seeds, scratch, self.memory_limit)
                    active[w.fd] = w
                    selector.register(w.fd, selectors.EVENT_READ)
                for key, _ in selector.select(timeout=1.0):
                    w = active[key.fd]
                    if not self._read(w):
                        selector.unregister(w.fd)
                        del active[w.fd]
                        rest = self._finish(w)
                        if rest:  # the rest of the chunk, in a fresh worker
                            pending.insert(0, (w.chunk, rest))
                now = time.monotonic()
                for w in active.values():
                    if w.current is not None and not w.timed_out and now - w.started > self.case_timeout:
                        w.timed_out = True
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(w.pid, signal.SIGKILL)
                if self.report and now - last_write > 30:
                    self.wall_seconds = now - started
                    self.write()
                    last_write = now
        finally:
            for w in active.values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.pid, signal.SIGKILL)
                os.waitpid(w.pid, 0)
                os.close(w.fd)
            shutil.rmtree(scratch, ignore_errors=True)
        self.wall_seconds = time.monotonic() - started
        if self.report:
            self.write(finished=True)
        return self.tally

    def _read(self, w: _Worker) -> bool:
        """Take in what the worker wrote; False once it has closed its end (exited)."""
        try:
            data = os.read(w.fd, 1 << 16)
        except BlockingIOError:
            return True
        if not data:
            return False
        w.buffer += data
        *lines, w.buffer = w.buffer.split(b"\n")
        for line in lines:
            event = json.loads(line)
            if "start" in event:
                w.current, w.started = int(event["start"]), time.monotonic()
            else:
                outcome = Outcome(**event["done"])
                self._record(outcome, w.chunk)
                w.jobs.remove(outcome.index)
                w.current = None
        return True

    def _finish(self, w: _Worker) -> list[int]:
        """Reap an exited worker; a case it died in (or was killed for) is recorded. The jobs left undone."""
        os.close(w.fd)
        _, status, usage = os.wait4(w.pid, 0)
        if w.current is not None:
            how = (f"ran past {self.case_timeout:.0f} s" if w.timed_out else
                   f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}")
            outcome = Outcome(w.chunk[0], w.current, "timeout" if w.timed_out else "crash", how, "",
                              f"the worker died: {how}; its last output: {_tail(w.log)}"[:500],
                              peak_bytes=usage.ru_maxrss * 1024)
            self._record(outcome, w.chunk)
            w.jobs.remove(w.current)
        shutil.rmtree(os.path.dirname(w.log), ignore_errors=True)
        return w.jobs

    def _record(self, outcome: Outcome, chunk: Chunk) -> None:
        tally = self._partial.setdefault(chunk, Tally())
        tally.add(outcome, reproducer(self.seed, outcome))
        self._left[chunk] -= 1
        if self._left[chunk] == 0:  # a chunk counts once all its cases are in
            self.tally.merge(self._partial.pop(chunk))
            self.done.add(chunk)
            if self.progress:
                print(f"[{time.strftime('%H:%M:%S')}] {self.tally.cases} cases, {self.tally.failed()} failures",
                      file=sys.stderr, flush=True)

    def write(self, finished: bool = False) -> None:
        """The report (atomically replaced): the tally, its summary line, peak memory, and the chunks done."""
        assert self.report is not None
        families = {name: t.family for name, t in targets.BY_NAME.items()}
        doc = {"command": " ".join(self.argv), "seed": self.seed, "plan": self.plan, "finished": finished,
               "wall_seconds": round(self.wall_seconds, 1), "summary": self.tally.summary(),
               "engine_and_manifest_cases": sum(n for t, r in self.tally.counts.items()
                                                if families[t] in ("engine", "manifest", "engine+manifest")
                                                for n in r.values()),
               "parent_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
               "tally": self.tally.to_json(), "done_chunks": sorted(self.done)}
        tmp = self.report + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, self.report)

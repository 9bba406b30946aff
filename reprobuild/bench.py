"""Latency and throughput of an engine, after trtexec's performance summary (``reprobuild bench``).

Each timed iteration does what an application does with host data: copy the inputs to the device (H2D), run the
engine (``enqueue``), copy the outputs back (D2H), wait. On cuda, CUDA events on the context's stream split the
iteration into H2D, GPU compute and D2H; ``latency`` is their sum (trtexec's "Latency"), ``host latency`` is the
wall time the host saw from the start of the copy to the outputs on the host, and ``enqueue`` is the host time of
the ``enqueue`` call alone (with a CUDA graph, one graph launch; without, one launch per kernel). On cpu the engine
runs inside ``enqueue``, so GPU compute is that call's wall time and there are no copies.

Warm-up runs come first (the first run captures the CUDA graph: with no warm-up, the first timed iteration
includes the capture). Then iterations run one after another until both ``iterations`` are done and ``duration``
seconds have passed. Percentiles are nearest-rank. Throughput is
iterations per second of the timed loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from reprobuild.core.dtypes import np_dtype
from reprobuild.core.errors import UsageError
from reprobuild.engine.memory import device_memory_info
from reprobuild.engine.runtime import Engine

MAX_ITERATIONS = 10_000_000


@dataclass(frozen=True)
class Stats:
    """Milliseconds: min, mean, median, p90, p95, p99, max over the timed iterations."""

    min: float
    mean: float
    median: float
    p90: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, samples_ns: Sequence[int | float]) -> Stats:
        ordered = sorted(float(s) / 1e6 for s in samples_ns)
        if not ordered:
            raise UsageError("no iterations were timed")

        def rank(p: float) -> float:  # nearest rank, as trtexec reports its percentiles
            return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

        return cls(min=ordered[0], mean=sum(ordered) / len(ordered), median=rank(50), p90=rank(90), p95=rank(95),
                   p99=rank(99), max=ordered[-1])


@dataclass(frozen=True)
class BenchReport:
    engine_sha256: str
    backend: str
    device: str
    cuda_graph: bool
    warmup_runs: int
    iterations: int
    seconds: float  #: wall time of the timed loop
    throughput_qps: float
    latency: Stats  #: H2D + GPU compute + D2H (events on cuda); on cpu the host latency
    host_latency: Stats  #: host wall time per iteration, inputs on the host to outputs on the host
    enqueue: Stats  #: host time of the enqueue call
    gpu_compute: Stats  #: events around the run on cuda; the enqueue call's wall time on cpu
    h2d: Stats | None
    d2h: Stats | None
    device_memory: dict[str, int] | None  #: cudaMemGetInfo after the run: free and total bytes

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _check_count(value: int | None, what: str, minimum: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or not minimum <= value <= MAX_ITERATIONS):
        raise UsageError(f"{what} must be a whole number from {minimum} to {MAX_ITERATIONS}; got {value!r}")


def benchmark(engine: Engine, inputs: Mapping[str, np.ndarray], iterations: int = 200, duration: float = 0.0,
              warmup: int = 20, cuda_graph: bool | None = None) -> BenchReport:
    """Time ``engine`` on host ``inputs`` (see the module's docstring); ``cuda_graph`` as
    ``Engine.create_execution_context`` takes it."""
    _check_count(iterations, "iterations", 1)
    _check_count(warmup, "warm-up runs", 0)
    if not 0.0 <= duration <= 86400.0:  # also refuses nan
        raise UsageError(f"duration must be between 0 and 86400 seconds; got {duration!r}")
    context = engine.create_execution_context(cuda_graph=cuda_graph)
    backend = engine.backend
    pinned = {b.name for b in engine.inputs if b.value is not None}  # fixed at build time: nothing to send
    host = {name: np.ascontiguousarray(value) for name, value in inputs.items() if name not in pinned}
    run = _cuda_iteration(context, host) if backend.name == "cuda" else _cpu_iteration(context, host)
    for _ in range(warmup):
        run()
    samples: list[tuple[int, int, int, int, int]] = []
    started = time.perf_counter()
    while len(samples) < MAX_ITERATIONS and (len(samples) < iterations or time.perf_counter() - started < duration):
        samples.append(run())
    seconds = time.perf_counter() - started
    wall, enqueue, h2d, compute, d2h = (list(column) for column in zip(*samples))
    cuda = backend.name == "cuda"
    memory = device_memory_info(backend)
    return BenchReport(
        engine_sha256=engine.sha256, backend=backend.name,
        device=getattr(backend, "gpu_name", "") or backend.fingerprint().get("cpu.model", backend.name),
        cuda_graph=context.cuda_graph, warmup_runs=warmup, iterations=len(samples), seconds=seconds,
        throughput_qps=len(samples) / seconds if seconds > 0 else float("inf"),
        latency=Stats.of([a + b + c for a, b, c in zip(h2d, compute, d2h)]) if cuda else Stats.of(wall),
        host_latency=Stats.of(wall), enqueue=Stats.of(enqueue), gpu_compute=Stats.of(compute),
        h2d=Stats.of(h2d) if cuda else None, d2h=Stats.of(d2h) if cuda else None,
        device_memory={"free_bytes": memory[0], "total_bytes": memory[1]} if memory else None,
    )


def _cpu_iteration(context: Any, host: Mapping[str, np.ndarray]) -> Any:
    def run() -> tuple[int, int, int, int, int]:
        t0 = time.perf_counter_ns()
        outputs = context.enqueue(host)  # the cpu backend computes inside enqueue
        t1 = time.perf_counter_ns()
        context.to_host(outputs)
        t2 = time.perf_counter_ns()
        return t2 - t0, t1 - t0, 0, t1 - t0, 0

    return run


def _cuda_iteration(context: Any, host: Mapping[str, np.ndarray]) -> Any:
    """One iteration on the context's stream with events between its parts; the device inputs and the pinned
    host outputs are allocated once."""
    import cupy  # lazy: optional (the cuda extras); only CUDA engines reach this
    import cupyx  # lazy: as cupy

    backend, stream = context.backend, context.stream
    with backend.activate(stream):
        device_inputs = {name: cupy.empty(value.shape, value.dtype) for name, value in host.items()}
        pinned_inputs = {name: cupyx.empty_pinned(value.shape, value.dtype) for name, value in host.items()}
        for name, value in host.items():
            pinned_inputs[name][...] = value
        pinned_outputs = {b.name: cupyx.empty_pinned(b.shape, np_dtype(b.dtype)) for b in context.engine.outputs}

    def run() -> tuple[int, int, int, int, int]:
        events = [cupy.cuda.Event() for _ in range(4)]
        t0 = time.perf_counter_ns()
        with backend.activate(stream):
            events[0].record(stream)
            for name, value in pinned_inputs.items():
                device_inputs[name].set(value, stream=stream)
            events[1].record(stream)
            e0 = time.perf_counter_ns()
            outputs = context.enqueue(device_inputs)
            e1 = time.perf_counter_ns()
            events[2].record(stream)
            for name, value in outputs.items():
                cupy.asnumpy(value, stream=stream, out=pinned_outputs[name], blocking=False)  # async, pinned
            events[3].record(stream)
            stream.synchronize()
        t1 = time.perf_counter_ns()

        def between(a: int, b: int) -> int:
            return round(cupy.cuda.get_elapsed_time(events[a], events[b]) * 1e6)

        return t1 - t0, e1 - e0, between(0, 1), between(1, 2), between(2, 3)

    return run

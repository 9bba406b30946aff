"""CUDA inputs are read after the work that produces them, and before the work that follows them (issue 20,
finding 4): a CuPy array made on the caller's current stream, and a ``__cuda_array_interface__`` object naming its
stream, passed straight to ``execute``/``enqueue``. Each run checks its outputs' bits against the outputs the same
engine gives for the same input from the host; on the old code most of these runs were wrong.

The producer is made slow (a chain of CuPy kernels on its stream just before the input) and the engine heavy (three
convolutions at batch 32), so that a context stream that did not wait would read the input before it is written;
the overwriting cases write the input at once after ``enqueue`` while the context's stream is still busy."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from onnx import helper

from reprobuild.builder import Builder, BuilderConfig
from reprobuild.engine import Engine, Runtime
from reprobuild.frontend import network_from_onnx_bytes
from tests.helpers import CUDA_SKIP, make_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(CUDA_SKIP is not None, reason=f"no CUDA: {CUDA_SKIP}")]

SHAPE = (32, 16, 48, 48)  # batch 32
DISTINCT = 4  # inputs used in turn, so that a stale or half-written input gives other bits


@pytest.fixture(scope="module")
def engine() -> Engine:
    rng = np.random.default_rng(4)
    channels = [SHAPE[1], 32, 32, SHAPE[1]]
    nodes, inits, x = [], {}, "x"
    for i, (cin, cout) in enumerate(itertools.pairwise(channels)):
        inits[f"w{i}"] = (rng.standard_normal((cout, cin, 3, 3)) / np.sqrt(9 * cin)).astype(np.float32)
        inits[f"b{i}"] = rng.standard_normal(cout).astype(np.float32)
        nodes += [helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        x = f"r{i}"
    model = make_model(nodes, {"x": SHAPE}, [x], inits, 17)
    network, _ = network_from_onnx_bytes(model.SerializeToString())
    return Runtime().deserialize_engine(Builder().build(network, BuilderConfig(backend="cuda", iterations=1,
                                                                                warmup=0)).engine)


class Case:
    """The host inputs, the outputs expected for each (from the host path, on a context of their own) on the device,
    and a busy loop that keeps a stream occupied for about a millisecond."""

    def __init__(self, engine: Engine) -> None:
        import cupy as cp

        self.cp = cp
        rng = np.random.default_rng(5)
        self.hosts = [rng.standard_normal(SHAPE).astype(np.float32) for _ in range(DISTINCT)]
        (self.output,) = (b.name for b in engine.outputs)
        reference = engine.create_execution_context(cuda_graph=False)
        wanted = [reference.execute({"x": h})[self.output] for h in self.hosts]
        assert len({w.tobytes() for w in wanted}) == DISTINCT
        self.wanted = [cp.asarray(w).view(cp.uint32) for w in wanted]
        self.wanted_bytes = [w.view(np.uint32).tobytes() for w in wanted]
        self.busy = cp.ones(1 << 25, dtype=cp.float32)
        cp.cuda.Device().synchronize()

    def slow_producer(self) -> None:
        """A chain of kernels on the current stream, which the next input is queued behind."""
        for _ in range(8):
            self.cp.sin(self.busy, out=self.busy)

    def differs(self, out: Any, k: int) -> Any:
        """On the current stream: a device bool, whether ``out``'s bits differ from input k's expected outputs."""
        return self.cp.any(out.view(self.cp.uint32) != self.wanted[k])


@pytest.fixture(scope="module")
def case(engine: Engine) -> Case:
    return Case(engine)


def _tally(runs: int, one: Callable[[int], Any], cp: Any) -> int:
    """Runs ``one(i)`` for each run, each giving a device bool (or a host bool); the number that were wrong."""
    flags = [one(i) for i in range(runs)]
    cp.cuda.Device().synchronize()
    return sum(int(bool(f)) for f in flags)


def test_cupy_inputs_made_on_the_current_stream_are_read_after_their_producer(engine: Engine, case: Case) -> None:
    """1,000 runs, each with a CuPy input made on the current (legacy default) stream just before the call, behind
    a slow producer: cupy.asarray(host) into execute(outputs='device'), a few CuPy kernels into execute, asarray
    into enqueue + synchronize, and asarray into enqueue with the input overwritten at once (its next user comes
    after the run's read). 0 wrong."""
    cp = case.cp
    context = engine.create_execution_context()  # a CUDA graph where the engine allows one, as by default
    on_device = [cp.asarray(h) for h in case.hosts]
    cp.cuda.Device().synchronize()

    def asarray_execute(i: int) -> Any:
        case.slow_producer()
        out = context.execute({"x": cp.asarray(case.hosts[i % DISTINCT])}, outputs="device")[case.output]
        return case.differs(out, i % DISTINCT)

    def kernels_execute(i: int) -> Any:
        case.slow_producer()
        x = cp.negative(cp.negative(on_device[i % DISTINCT]))  # the same bits, made by two kernels
        out = context.execute({"x": x})[case.output]
        return out.view(np.uint32).tobytes() != case.wanted_bytes[i % DISTINCT]

    def enqueue_synchronize(i: int) -> Any:
        case.slow_producer()
        buffers = context.enqueue({"x": cp.asarray(case.hosts[i % DISTINCT])})
        context.synchronize()
        with context.stream:  # read before this thread's next run replaces the buffers
            return case.differs(buffers[case.output], i % DISTINCT)

    def enqueue_overwrite(i: int) -> Any:
        x = cp.asarray(case.hosts[i % DISTINCT])
        buffers = context.enqueue({"x": x})
        x.fill(cp.nan)  # the caller reuses its input at once; the context's stream is still busy
        with context.stream:
            return case.differs(buffers[case.output], i % DISTINCT)

    wrong = {fn.__name__: _tally(250, fn, cp)
             for fn in (asarray_execute, kernels_execute, enqueue_synchronize, enqueue_overwrite)}
    assert wrong == dict.fromkeys(wrong, 0), wrong


class Interface:
    """A CUDA array known only through ``__cuda_array_interface__`` version 3, with the producer's ``stream``
    (as Numba's device arrays, RAPIDS or a C extension hand one over)."""

    def __init__(self, array: Any, stream: int | None) -> None:
        self._array = array
        self.__cuda_array_interface__ = {**array.__cuda_array_interface__, "version": 3, "stream": stream}


def test_cuda_array_interface_inputs_are_ordered_by_their_stream_both_ways(engine: Engine, case: Case) -> None:
    """200 runs on an eager context: the producer writes the input on a stream of its own (after a slow chain) and
    names it in the interface, and overwrites the input right after enqueue, on that stream; the same through the
    legacy default stream (1); and an interface with no stream (nothing pending). 0 wrong."""
    cp = case.cp
    context = engine.create_execution_context(cuda_graph=False)
    producer = cp.cuda.Stream(non_blocking=True)

    def own_stream(i: int) -> Any:
        with producer:
            case.slow_producer()
            x = cp.asarray(case.hosts[i % DISTINCT])
            buffers = context.enqueue({"x": Interface(x, producer.ptr)})
            x.fill(cp.nan)
        with context.stream:
            return case.differs(buffers[case.output], i % DISTINCT)

    def legacy_stream(i: int) -> Any:
        case.slow_producer()
        x = cp.asarray(case.hosts[i % DISTINCT])
        buffers = context.enqueue({"x": Interface(x, 1)})
        x.fill(cp.nan)
        with context.stream:
            return case.differs(buffers[case.output], i % DISTINCT)

    ready = [cp.asarray(h) for h in case.hosts]
    cp.cuda.Device().synchronize()

    def no_stream(i: int) -> Any:
        out = context.execute({"x": Interface(ready[i % DISTINCT], None)}, outputs="device")[case.output]
        return case.differs(out, i % DISTINCT)

    wrong = {fn.__name__: _tally(n, fn, cp) for fn, n in ((own_stream, 80), (legacy_stream, 80), (no_stream, 40))}
    assert wrong == dict.fromkeys(wrong, 0), wrong


def test_device_memory_from_cupy_is_written_after_the_callers_pending_work(engine: Engine, case: Case) -> None:
    """Scratch memory the caller supplies, still being cleared on its stream behind a slow producer, is written
    by the context's runs only after the clearing (else the clearing would zero the run's outputs)."""
    cp = case.cp
    context = engine.create_execution_context_without_device_memory(cuda_graph=False)
    wrong = 0
    for i in range(20):
        case.slow_producer()
        context.device_memory = cp.zeros(engine.device_memory_size, dtype=cp.uint8)  # a memset, queued
        out = context.execute({"x": case.hosts[i % DISTINCT]})[case.output]
        wrong += out.view(np.uint32).tobytes() != case.wanted_bytes[i % DISTINCT]
    assert wrong == 0

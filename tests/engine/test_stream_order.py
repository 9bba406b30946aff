"""CUDA inputs are read after the work that produces them, and before the work that follows them (issue 20,
finding 4): a CuPy array made on the caller's current stream, and a ``__cuda_array_interface__`` object naming its
stream, passed straight to ``execute``/``enqueue``. Each run checks its outputs' bits against the outputs the same
engine gives for the same input from the host; on the old code most of these runs were wrong.

The producer is made slow (a chain of CuPy kernels on its stream just before the input) and the engine heavy (three
convolutions at batch 32), so that a context stream that did not wait would read the input before it is written;
the overwriting cases write the input at once after ``enqueue`` while the context's stream is still busy.

Where the ordering is decided (which stream an input waits for, and when) is checked on the CPU too, with the
stream calls recorded."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from onnx import helper

from reprobuild.builder import Builder, BuilderConfig
from reprobuild.core.errors import InputError
from reprobuild.engine import Engine, Runtime, interop
from reprobuild.frontend import network_from_onnx_bytes
from tests.engine.test_runtime import build_example
from tests.helpers import CUDA_SKIP, make_model

needs_cuda = pytest.mark.skipif(CUDA_SKIP is not None, reason=f"no CUDA: {CUDA_SKIP}")


# --- which stream an input waits for, and when: on the cpu, with the stream calls recorded -------------------------

class FakeCupyArray:
    """Stands for a CuPy array: what ``interop.share`` gets for a CuPy input, and makes of an interface object."""

    __module__ = "cupy.fake"  # how interop.location tells a CuPy array, with its device
    device = SimpleNamespace(id=0)

    def __init__(self, source: Any = None) -> None:
        self.source = source


class CudaInterface:
    def __init__(self, stream: Any) -> None:
        self.__cuda_array_interface__ = {"shape": (8, 64), "typestr": "<f4", "data": (0x7F0000000000, False),
                                         "version": 3, "stream": stream}


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(interop, "_pointer_device", lambda pointer: 0)
    xp = SimpleNamespace(ndarray=FakeCupyArray, asarray=FakeCupyArray)
    return SimpleNamespace(name="cuda", xp=xp, device_id=0)


def test_a_cupy_input_waits_for_the_callers_stream_an_interface_for_its_own(fake_cuda: Any) -> None:
    """CuPy's convention: a CuPy array's pending work is on the caller's current stream. CAI v3: the object's
    'stream' (None: nothing pending; 1 and 2: the legacy and per-thread default streams; else a handle); CuPy then
    imports it without the stream, so that it does not block the host on it, and the original stays alive."""
    array = FakeCupyArray()
    assert interop.share(array, fake_cuda, "x", 5) == (array, 5)
    for stream in (None, 1, 2, 0x5D0C2A0):
        value = CudaInterface(stream)
        shared, producer = interop.share(value, fake_cuda, "x", 5)
        assert producer == stream
        assert "stream" not in shared.source.__cuda_array_interface__ and shared.source.owner is value
    for bad in ("1", True, -3, 1.0):
        with pytest.raises(InputError, match=r"input 'x'.*'stream' is .*version 3 allows None, 1 \(the legacy"):
            interop.share(CudaInterface(bad), fake_cuda, "x", 5)


def test_the_context_stream_waits_before_the_upload_and_the_producer_after_it(monkeypatch: pytest.MonkeyPatch,
                                                                                rng: np.random.Generator) -> None:
    """The run's stream waits for the input's producer before the input is read; the producer waits for the run's
    copy of the input before any layer is enqueued (before a CUDA graph launch); a producer that is the
    context's own stream needs neither."""
    engine = Runtime().deserialize_engine(build_example("mlp.onnx", "cpu"))
    context = engine.create_execution_context()
    context.stream = SimpleNamespace(ptr=77)
    events: list[tuple[Any, ...]] = []
    producer = {"stream": 9}

    def share(value: Any, backend: Any, name: str, caller: Any) -> tuple[Any, int]:
        return value, producer["stream"]

    monkeypatch.setattr("reprobuild.engine.runtime.share", share)
    monkeypatch.setattr(context.backend, "wait_for", lambda waiter, on: events.append(("wait", waiter, on)))
    upload = context.backend.upload
    monkeypatch.setattr(context.backend, "upload", lambda dst, src: (events.append(("upload",)), upload(dst, src)))
    feeds = {"input": rng.standard_normal((8, 64)).astype(np.float32)}
    context.enqueue(feeds, after_layer=lambda index, outputs: events.append(("layer", index)))
    assert events[:4] == [("wait", 77, 9), ("upload",), ("wait", 9, 77), ("layer", 0)], events
    events.clear()
    producer["stream"] = 77
    context.to_host(context.enqueue(feeds))
    assert events == [("upload",)]


# --- on a GPU --------------------------------------------------------------------------------------------------------

SHAPE = (32, 16, 48, 48)  # batch 32
DISTINCT = 4  # inputs used in turn, so that a stale or half-written input gives other bits


@pytest.fixture(scope="module")
def engine() -> Engine:
    if CUDA_SKIP is not None:
        pytest.skip(f"no CUDA: {CUDA_SKIP}")
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


@pytest.mark.gpu
@needs_cuda
def test_cupy_inputs_made_on_the_current_stream_are_read_after_their_producer(engine: Engine, case: Case) -> None:
    """1,000 runs, each with a CuPy input made on the current (legacy default) stream just before the call, behind
    a slow producer: cupy.asarray(host) into execute(outputs='device'), a few CuPy kernels into execute, asarray
    into enqueue + synchronize; and, while the context's stream still runs the previous call, two kernels into
    enqueue with the input overwritten at once (its next user comes after the run's read). 0 wrong (on the old
    code, on an H100, 748 of the 750 runs of the first three kinds were wrong)."""
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
        x = cp.negative(cp.negative(on_device[i % DISTINCT]))
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


@pytest.mark.gpu
@needs_cuda
def test_cuda_array_interface_inputs_are_ordered_by_their_stream_both_ways(engine: Engine, case: Case) -> None:
    """200 runs on an eager context: the producer writes the input on a stream of its own and names it in the
    interface, behind a slow chain (the run must wait for it, on the device: CuPy's host-blocking import sync is
    not used) or at once while the context's stream still runs the previous call, and overwrites the input right
    after enqueue, on that stream (the overwrite must wait for the run's read); the same through the legacy default
    stream (1); and an interface with no stream (nothing pending). 0 wrong."""
    cp = case.cp
    context = engine.create_execution_context(cuda_graph=False)
    producer = cp.cuda.Stream(non_blocking=True)
    ready = [cp.asarray(h) for h in case.hosts]
    cp.cuda.Device().synchronize()

    def made_then_overwritten(i: int, slow: bool, stream: int) -> Any:
        if slow:
            case.slow_producer()
        x = cp.negative(cp.negative(ready[i % DISTINCT]))
        buffers = context.enqueue({"x": Interface(x, stream)})
        x.fill(cp.nan)
        with context.stream:
            return case.differs(buffers[case.output], i % DISTINCT)

    def own_stream_slow(i: int) -> Any:
        with producer:
            return made_then_overwritten(i, True, producer.ptr)

    def own_stream_busy_context(i: int) -> Any:
        with producer:
            return made_then_overwritten(i, False, producer.ptr)

    def legacy_stream(i: int) -> Any:
        return made_then_overwritten(i, i % 2 == 0, 1)

    def no_stream(i: int) -> Any:
        out = context.execute({"x": Interface(ready[i % DISTINCT], None)}, outputs="device")[case.output]
        return case.differs(out, i % DISTINCT)

    wrong = {fn.__name__: _tally(n, fn, cp) for fn, n in ((own_stream_slow, 50), (own_stream_busy_context, 50),
                                                          (legacy_stream, 60), (no_stream, 40))}
    assert wrong == dict.fromkeys(wrong, 0), wrong


@pytest.mark.gpu
@needs_cuda
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

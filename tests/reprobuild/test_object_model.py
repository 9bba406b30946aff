"""TensorRT's object model, the parts issue 11 added: a pluggable GpuAllocator, the per-device timing lock, the
build log's memory lines, and an engine that outlives its builder, network, parser and config."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from typing import Any

import numpy as np
import pytest

from reprobuild.builder import Builder, BuilderConfig
from reprobuild.builder import selection as selection_module
from reprobuild.builder.replay import ReplaySelector
from reprobuild.core.errors import ResourceError, UsageError
from reprobuild.core.logger import RecordingLogger, Severity
from reprobuild.engine import Runtime
from reprobuild.engine.allocator import GpuAllocator
from reprobuild.engine.memory import MemoryTotals
from reprobuild.frontend import OnnxParser, network_from_onnx_path
from reprobuild.kernels.backend import Backend
from tests.helpers import BACKENDS, EXAMPLES, to_host

MLP = f"{EXAMPLES}/mlp.onnx"


def _build(logger: Any = None, backend: str = "cpu", **kwargs: Any) -> bytes:
    network, _ = network_from_onnx_path(MLP)
    return Builder(logger, **kwargs).build(network, BuilderConfig(backend=backend, iterations=2, warmup=0)).engine


class CountingAllocator(GpuAllocator):
    """Hands out memory of the backend and remembers every request."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[int, int, str]] = []
        self.returned: list[int] = []

    def allocate(self, size: int, alignment: int, purpose: str, backend: Backend) -> Any:
        self.requests.append((size, alignment, purpose))
        return backend.empty_bytes(size + 1024)  # more than asked for is fine

    def deallocate(self, memory: Any) -> None:
        self.returned.append(int(memory.nbytes))


@pytest.mark.parametrize("backend", BACKENDS)
def test_contexts_take_their_scratch_memory_from_the_runtime_allocator(backend: str) -> None:
    allocator = CountingAllocator()
    engine = Runtime(gpu_allocator=allocator).deserialize_engine(_build(backend=backend))
    x = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    expected = engine.create_execution_context().execute({"input": x})["probs"]  # not from the allocator
    assert allocator.requests == [(engine.device_memory_size, 256 if backend == "cuda" else 16,
                                   "context scratch memory")]
    context = engine.create_execution_context()
    assert context.execute({"input": x})["probs"].tobytes() == expected.tobytes()
    assert len(allocator.requests) == 2 and allocator.live_bytes == engine.device_memory_size
    del context
    gc.collect()
    assert allocator.returned == [engine.device_memory_size + 1024] * 2 and allocator.live_bytes == 0
    assert allocator.allocated_bytes == 2 * engine.device_memory_size


def test_the_builder_golden_run_takes_its_scratch_memory_from_the_builder_allocator() -> None:
    allocator = CountingAllocator()
    _build(gpu_allocator=allocator)
    assert [purpose for _, _, purpose in allocator.requests] == ["context scratch memory"]


class BadAllocator(GpuAllocator):
    def __init__(self, give: Any) -> None:
        super().__init__()
        self.give = give

    def allocate(self, size: int, alignment: int, purpose: str, backend: Backend) -> Any:
        return self.give(size)


@pytest.mark.parametrize("give, error, message", [
    (lambda size: None, ResourceError, "could not allocate"),
    (lambda size: np.empty(size // 2, np.uint8), UsageError, "but .* were asked for"),
    (lambda size: np.empty(size + 64, np.uint8)[1:], UsageError, "not aligned to 16 bytes"),
    (lambda size: np.empty((size + 8, 2), np.uint8)[:, 0], UsageError, "non-contiguous"),
    (lambda size: [0] * size, Exception, "is a list"),
])
def test_a_bad_allocation_is_a_typed_error_naming_the_allocator(give: Any, error: type[Exception],
                                                                 message: str) -> None:
    engine = Runtime(gpu_allocator=BadAllocator(give)).deserialize_engine(_build())
    with pytest.raises(error, match=message) as raised:
        engine.create_execution_context()
    assert "BadAllocator" in str(raised.value)


def test_an_allocator_must_be_a_gpu_allocator() -> None:
    with pytest.raises(UsageError, match="GpuAllocator"):
        Runtime(gpu_allocator=object())  # type: ignore[arg-type]


def test_builders_on_one_device_take_turns_timing_and_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two builds in two threads on the cpu: their timing never overlaps, and the one that waited logs it."""
    intervals: list[tuple[str, float, float]] = []
    inside = threading.Event()
    original = selection_module.time_candidates

    def slow(*args: Any, **kwargs: Any) -> int:
        start = time.perf_counter()
        inside.set()
        time.sleep(0.05)
        result = original(*args, **kwargs)
        intervals.append((threading.current_thread().name, start, time.perf_counter()))
        return result

    from reprobuild.builder import builder as builder_module

    monkeypatch.setattr(builder_module, "time_candidates", slow)
    loggers = {name: RecordingLogger(Severity.VERBOSE) for name in ("first", "second")}

    def build(name: str) -> None:
        _build(loggers[name])

    first = threading.Thread(target=build, args=("first",), name="first")
    first.start()
    assert inside.wait(30)
    second = threading.Thread(target=build, args=("second",), name="second")
    second.start()
    first.join(60)
    second.join(60)
    spans = {name: (min(s for n, s, _ in intervals if n == name), max(e for n, _, e in intervals if n == name))
             for name in ("first", "second")}
    assert spans["first"][1] <= spans["second"][0], spans  # the second timed only after the first finished
    waited = [m for m in loggers["second"].messages() if "waiting for the timing lock of cpu" in m]
    assert waited and "another build in this process" in waited[0]
    assert not any("waiting" in m for m in loggers["first"].messages())


def test_a_replay_times_nothing_and_so_never_waits_for_the_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    from reprobuild.builder import builder as builder_module
    from reprobuild.builder import timing_lock as lock_module

    network, _ = network_from_onnx_path(MLP)
    result = Builder().build(network, BuilderConfig(backend="cpu", iterations=1, warmup=0))
    key = lock_module.device_key(Runtime().deserialize_engine(result.engine).backend)
    held = lock_module._LOCKS.setdefault(key, threading.Lock())
    called: list[str] = []
    def lock(*args: Any) -> threading.Lock:
        called.append("lock")
        return held

    monkeypatch.setattr(builder_module, "timing_lock", lock)
    config = BuilderConfig(backend="cpu", iterations=1, warmup=0, algorithm_selector=ReplaySelector(result.manifest))
    assert held.acquire(timeout=5)  # another build is timing on this device
    try:
        replayed = Builder().build(network, config)
    finally:
        held.release()
    assert called == [] and replayed.engine == result.engine


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_build_log_memory_lines_are_the_manifest_figures(backend: str) -> None:
    logger = RecordingLogger(Severity.INFO)
    network, _ = network_from_onnx_path(MLP)
    result = Builder(logger).build(network, BuilderConfig(backend=backend, iterations=1, warmup=0))
    pinned, engine = result.manifest.pinned, result.manifest.engine
    assert engine is not None
    totals = MemoryTotals.of(backend, engine.size_bytes, pinned.memory.weights_bytes, pinned.memory.context_bytes)
    on_gpu = pinned.memory.weights_bytes if backend == "cuda" else 0
    assert (totals.host_persistent_bytes, totals.device_persistent_bytes) == (len(result.engine), on_gpu)
    report = result.manifest.evidence.memory_report if result.manifest.evidence else None
    assert report is not None and (report.host_persistent_bytes, report.device_persistent_bytes,
                                   report.scratch_bytes) == (len(result.engine), on_gpu, pinned.memory.context_bytes)
    if backend == "cuda":  # cudaMemGetInfo
        assert report.device_total_bytes and 0 < (report.device_free_bytes or 0) < report.device_total_bytes
        assert any(m.startswith("device memory (cudaMemGetInfo): ") for m in logger.messages())
    else:
        assert report.device_free_bytes is None and report.device_total_bytes is None
    messages = logger.messages()
    for line in totals.lines():
        assert line in messages
    assert f"Total Scratch Memory: {Runtime().deserialize_engine(result.engine).device_memory_size} bytes" in messages


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_engine_keeps_working_after_builder_network_parser_and_config_are_gone(backend: str) -> None:
    builder = Builder()
    network = builder.create_network()
    parser = OnnxParser(network)
    parser.parse_from_file(MLP)
    config = builder.create_builder_config()
    config.backend, config.iterations, config.warmup = backend, 1, 0
    result = builder.build(network, config)
    runtime = Runtime()
    engine = runtime.deserialize_engine(result.engine)
    x = np.random.default_rng(3).standard_normal((8, 64)).astype(np.float32)
    context = engine.create_execution_context()
    expected = to_host(context.execute({"input": x})["probs"]).tobytes()
    gone = [weakref.ref(o) for o in (builder, network, parser, config, runtime, result)]
    del builder, network, parser, config, runtime, result
    gc.collect()
    assert all(ref() is None for ref in gone)
    assert to_host(context.execute({"input": x})["probs"]).tobytes() == expected
    assert to_host(engine.create_execution_context().execute({"input": x})["probs"]).tobytes() == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_torch_allocator_supplies_scratch_memory(backend: str) -> None:
    torch = pytest.importorskip("torch")

    class TorchAllocator(GpuAllocator):
        def __init__(self) -> None:
            super().__init__()
            self.tensors: list[Any] = []

        def allocate(self, size: int, alignment: int, purpose: str, backend: Backend) -> Any:
            self.tensors.append(torch.empty(size, dtype=torch.uint8, device=backend.name))
            return self.tensors[-1]

    allocator = TorchAllocator()
    engine = Runtime(gpu_allocator=allocator).deserialize_engine(_build(backend=backend))
    context = engine.create_execution_context()
    base = allocator.tensors[0].data_ptr()
    assert base <= context.get_tensor_address("probs") < base + engine.device_memory_size
    x = np.random.default_rng(4).standard_normal((8, 64)).astype(np.float32)
    expected = Runtime().deserialize_engine(engine.serialize()).create_execution_context().execute({"input": x})
    assert context.execute({"input": x})["probs"].tobytes() == expected["probs"].tobytes()


def test_inspect_shows_the_memory_lines(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from reprobuild.cli.main import main

    engine = tmp_path / "mlp.engine"
    assert main(["build", MLP, "-o", str(engine), "--backend", "cpu", "-q"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(engine)]) == 0
    out = capsys.readouterr().out
    context_bytes = Runtime().deserialize_engine(engine.read_bytes()).device_memory_size
    assert (f"Total Host Persistent Memory: {engine.stat().st_size} bytes; Total Device Persistent Memory: 0 bytes; "
            f"Total Scratch Memory: {context_bytes} bytes") in out

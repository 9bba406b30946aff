"""Runtime, Engine, ExecutionContext: input validation, contexts, threads, scratch memory, the lean import."""

from __future__ import annotations

import copy
import subprocess
import sys
import threading

import numpy as np
import pytest

from reprobuild.builder import Builder, BuilderConfig
from reprobuild.core.errors import InputError, TacticMismatchError, UsageError
from reprobuild.core.logger import ErrorRecorder
from reprobuild.engine import Engine, Runtime
from reprobuild.frontend import network_from_onnx_path
from reprobuild.kernels.tactic import TacticRegistry
from reprobuild.registry import default_registry
from tests.helpers import BACKENDS, EXAMPLES


def build_example(name: str, backend: str) -> bytes:
    network, _ = network_from_onnx_path(f"{EXAMPLES}/{name}")
    return Builder().build(network, BuilderConfig(backend=backend, iterations=1, warmup=0)).engine


@pytest.fixture(scope="module")
def cnn_engine() -> Engine:
    return Runtime().deserialize_engine(build_example("small_cnn.onnx", "cpu"))


def _image(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"image": rng.standard_normal((2, 3, 32, 32)).astype(np.float32)}


def test_bindings_and_memory_sizes(cnn_engine: Engine) -> None:
    assert [b.name for b in cnn_engine.inputs] == ["image"] and cnn_engine.inputs[0].shape == (2, 3, 32, 32)
    assert [b.name for b in cnn_engine.outputs] == ["probs"]
    assert cnn_engine.device_memory_size > 0 and cnn_engine.weights_bytes > 0


@pytest.mark.parametrize("feeds, message", [
    ({}, r"missing \['image'\]"),
    ({"image": np.zeros((2, 3, 32, 32), np.float32), "extra": np.zeros(1)}, r"unexpected \['extra'\]"),
    ({"image": np.zeros((1, 3, 32, 32), np.float32)}, r"shape \[1, 3, 32, 32\].*\[2, 3, 32, 32\]"),
    ({"image": np.zeros((2, 3, 32, 32), np.float64)}, r"dtype float64.*float32.*astype"),
])
def test_bad_inputs_are_typed_errors(cnn_engine: Engine, feeds: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        cnn_engine.create_execution_context().execute(feeds)


def test_errors_reach_the_error_recorder(cnn_engine: Engine) -> None:
    recorder = ErrorRecorder()
    engine = Runtime(error_recorder=recorder).deserialize_engine(build_example("mlp.onnx", "cpu"))
    with pytest.raises(InputError):
        engine.create_execution_context().execute({})
    assert recorder.num_errors == 1 and isinstance(recorder.get_error(0), InputError)


def test_runs_and_contexts_agree_bitwise(cnn_engine: Engine, rng: np.random.Generator) -> None:
    feeds = _image(rng)
    first = cnn_engine.create_execution_context()
    reference = first.execute(feeds)["probs"]
    assert first.execute(feeds)["probs"].tobytes() == reference.tobytes()
    assert cnn_engine.create_execution_context().execute(feeds)["probs"].tobytes() == reference.tobytes()


def test_one_context_per_thread_gives_identical_bits(cnn_engine: Engine, rng: np.random.Generator) -> None:
    feeds = _image(rng)
    reference = cnn_engine.create_execution_context().execute(feeds)["probs"].tobytes()
    results: list[bytes] = []

    def work() -> None:
        context = cnn_engine.create_execution_context()
        for _ in range(5):
            results.append(context.execute(feeds)["probs"].tobytes())

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 20 and set(results) == {reference}


def test_context_without_device_memory(cnn_engine: Engine, rng: np.random.Generator) -> None:
    feeds = _image(rng)
    context = cnn_engine.create_execution_context_without_device_memory()
    with pytest.raises(UsageError, match="no device memory"):
        context.execute(feeds)
    with pytest.raises(UsageError, match=f"at least {cnn_engine.device_memory_size}"):
        context.device_memory = np.empty(16, dtype=np.uint8)
    context.device_memory = np.empty(cnn_engine.device_memory_size, dtype=np.uint8)
    expected = cnn_engine.create_execution_context().execute(feeds)["probs"]
    assert context.execute(feeds)["probs"].tobytes() == expected.tobytes()


def test_engine_naming_a_changed_tactic_is_refused() -> None:
    data = build_example("mlp.onnx", "cpu")
    registry = default_registry()
    recorded = next(layer.tactic for layer in Runtime().deserialize_engine(data).header.layers
                    if layer.op == "Softmax")  # whichever tactic timing chose for it
    chosen = registry.get("Softmax", recorded.name, recorded.version)

    changed = copy.copy(chosen)  # the same tactic, whose identity now differs from the recorded one
    changed.__class__ = type("Changed", (type(chosen),), {"code_sha256": property(lambda self: "0" * 64)})
    tactics = [t for t in registry.all() if t is not chosen] + [changed]
    with pytest.raises(TacticMismatchError, match="code digest"):
        Runtime(registry=TacticRegistry(tactics)).deserialize_engine(data)
    missing = TacticRegistry([t for t in registry.all() if t is not chosen])
    with pytest.raises(TacticMismatchError, match=f"no tactic '{recorded.name}'"):
        Runtime(registry=missing).deserialize_engine(data)


@pytest.mark.parametrize("backend", BACKENDS)
def test_execute_returns_host_arrays_and_enqueue_backend_arrays(backend: str, rng: np.random.Generator) -> None:
    engine = Runtime().deserialize_engine(build_example("mlp.onnx", backend))
    context = engine.create_execution_context()
    feeds = {"input": rng.standard_normal((8, 64)).astype(np.float32)}
    host = context.execute(feeds)["probs"]
    assert isinstance(host, np.ndarray)
    device = context.enqueue(feeds)["probs"]
    assert isinstance(device, engine.backend.xp.ndarray)
    context.synchronize()
    assert engine.backend.to_host(device).tobytes() == host.tobytes()


def test_the_runtime_imports_neither_the_builder_nor_onnx() -> None:
    """Deployments need only reprobuild.engine (TensorRT's lean runtime idea)."""
    code = ("import sys, reprobuild.engine; "
            "bad = [m for m in sys.modules if m == 'onnx' or m.startswith(('onnx.', 'reprobuild.builder', "
            "'reprobuild.frontend', 'reprobuild.manifest'))]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

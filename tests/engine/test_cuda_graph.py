"""Launch plans and CUDA graphs: a context binds every layer's launches once and, by default on cuda, captures the
run into a CUDA graph on first use; graph and eager runs give the same bits, run after run, context to context."""

from __future__ import annotations

import threading

import numpy as np
import onnx
import pytest

from reprobuild.builder import Builder, BuilderConfig
from reprobuild.core.errors import UsageError
from reprobuild.engine import Runtime
from reprobuild.frontend import network_from_onnx_path
from reprobuild.kernels.launch import LaunchPlan
from tests.helpers import CUDA_SKIP, EXAMPLES, assert_close, ort_run

needs_cuda = pytest.mark.skipif(CUDA_SKIP is not None, reason=f"no CUDA: {CUDA_SKIP}")


def _build(name: str, backend: str, **config: object) -> bytes:
    network, _ = network_from_onnx_path(f"{EXAMPLES}/{name}")
    return Builder().build(network, BuilderConfig(backend=backend, iterations=2, warmup=1, **config)).engine  # type: ignore[arg-type]


def _feeds(engine, rng: np.random.Generator) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    return {b.name: rng.standard_normal(b.shape).astype(b.dtype) for b in engine.inputs}


def test_a_cpu_engine_records_why_it_runs_eagerly_and_refuses_a_graph() -> None:
    network, _ = network_from_onnx_path(f"{EXAMPLES}/small_cnn.onnx")
    result = Builder().build(network, BuilderConfig(backend="cpu", iterations=1, warmup=0))
    assert result.manifest.pinned.execution.cuda_graph is False
    assert "cpu backend has no CUDA graphs" in result.manifest.pinned.execution.reason
    assert result.manifest.pinned.config.cuda_graph is True  # asked for, not possible
    engine = Runtime().deserialize_engine(result.engine)
    assert engine.create_execution_context().cuda_graph is False
    with pytest.raises(UsageError, match="cannot run as a CUDA graph"):
        engine.create_execution_context(cuda_graph=True)


#: assert_close's tolerances of a narrow engine against onnxruntime in float32.
NARROW_TOLERANCE = {"fp16": {"rtol": 5e-2, "atol": 5e-2, "rel": 2e-2},
                    "bf16": {"rtol": 2e-1, "atol": 2e-1, "rel": 8e-2}}


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("model", ["small_cnn.onnx", "mlp.onnx"])
@pytest.mark.gpu
@needs_cuda
def test_graph_and_eager_runs_are_bitwise_identical(model: str, precision: str, rng: np.random.Generator) -> None:
    result_bytes = _build(model, "cuda", precision=precision)
    engine = Runtime().deserialize_engine(result_bytes)
    assert engine.graph_capturable and all(isinstance(layer.kernel, LaunchPlan) for layer in engine.layers)
    graph_ctx, eager_ctx = engine.create_execution_context(), engine.create_execution_context(cuda_graph=False)
    assert graph_ctx.cuda_graph and not eager_ctx.cuda_graph
    for _ in range(3):  # fresh inputs each time: the graph reads the context's input bindings, not stale values
        feeds = _feeds(engine, rng)
        runs = [graph_ctx.execute(feeds), graph_ctx.execute(feeds), eager_ctx.execute(feeds)]
        traced, _ = eager_ctx.execute_traced(feeds)
        for out in (*runs[1:], traced):
            for name, value in runs[0].items():
                assert value.tobytes() == out[name].tobytes(), f"{name} differs between graph and eager runs"
        assert all(np.isfinite(v).all() and np.abs(v).sum() > 0 for v in runs[0].values())
        onnx_model = onnx.load(f"{EXAMPLES}/{model}")  # and right: onnxruntime in float32 is the reference
        for name, want in zip([o.name for o in onnx_model.graph.output], ort_run(onnx_model, feeds)):
            tolerance = NARROW_TOLERANCE.get(precision, {})
            assert_close(runs[0][name], want, what=f"{model} at {precision} vs onnxruntime", **tolerance)


@pytest.mark.gpu
@needs_cuda
def test_graph_contexts_in_threads_agree(rng: np.random.Generator) -> None:
    engine = Runtime().deserialize_engine(_build("small_cnn.onnx", "cuda"))
    feeds = _feeds(engine, rng)
    expected = engine.create_execution_context(cuda_graph=False).execute(feeds)
    results: list[dict[str, np.ndarray]] = []

    def work() -> None:
        ctx = engine.create_execution_context()
        for _ in range(5):
            results.append(ctx.execute(feeds))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 20
    assert all(r[k].tobytes() == v.tobytes() for r in results for k, v in expected.items())


@pytest.mark.gpu
@needs_cuda
def test_a_build_without_graphs_records_it_and_its_contexts_run_eagerly() -> None:
    network, _ = network_from_onnx_path(f"{EXAMPLES}/small_cnn.onnx")
    result = Builder().build(network, BuilderConfig(backend="cuda", iterations=1, warmup=0, cuda_graph=False))
    assert result.manifest.pinned.execution.cuda_graph is False
    assert "turned CUDA graphs off" in result.manifest.pinned.execution.reason
    assert Runtime().deserialize_engine(result.engine).create_execution_context().cuda_graph is False


@pytest.mark.gpu
@needs_cuda
def test_tf32_is_excluded_at_fp32_and_recorded_per_layer_when_allowed() -> None:
    network, _ = network_from_onnx_path(f"{EXAMPLES}/small_cnn.onnx")
    strict = Builder().build(network, BuilderConfig(backend="cuda", iterations=1, warmup=0)).manifest
    assert {layer.precision for layer in strict.pinned.layers} == {"fp32"}
    assert strict.evidence is not None
    reasons = [c.reason for e in strict.evidence.layers for c in e.candidates if c.tactic.name.endswith("_tf32")]
    assert any("--precision tf32" in r for r in reasons)
    assert not any(layer.tactic.name.endswith("_tf32") for layer in strict.pinned.layers)
    tf32 = Builder().build(network, BuilderConfig(backend="cuda", iterations=1, warmup=0, precision="tf32")).manifest
    assert tf32.pinned.config.precision == "tf32"
    assert all(layer.precision == ("tf32" if layer.tactic.name.endswith("_tf32") else "fp32")
               for layer in tf32.pinned.layers)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "tf32", "fp16", "bf16"])
def test_verify_on_a_fused_graph_captured_engine(precision: str, rng: np.random.Generator) -> None:
    """verify's threads, concurrent streams and processes on an engine of FusedConv layers run as CUDA graphs."""
    from reprobuild.verify.run import VerifyPlan, verify

    network, _ = network_from_onnx_path(f"{EXAMPLES}/small_cnn.onnx")
    result = Builder().build(network, BuilderConfig(backend="cuda", iterations=2, warmup=1, precision=precision))
    assert result.manifest.pinned.execution.cuda_graph
    assert any(layer.op == "FusedConv" for layer in result.manifest.pinned.layers)
    if precision in ("fp16", "bf16"):  # every layer but the entry and exit casts computes narrow, hand-written
        layers = result.manifest.pinned.layers
        assert {layer.precision for layer in layers if layer.op != "Cast"} == {precision}
        assert not any(layer.tactic.family == "reference" for layer in layers), [
            (layer.name, layer.tactic.name) for layer in layers]
        dtype = {"fp16": "float16", "bf16": "bfloat16"}[precision]
        assert any(k.dtype == dtype for k in result.manifest.pinned.kernel_sources)
    engine = Runtime().deserialize_engine(result.engine)
    report = verify(engine, _feeds(engine, rng), VerifyPlan(runs=3, contexts=2, threads=2, streams=2, processes=2))
    assert report.deterministic and report.distinct_results == 1, report.model_dump_json(indent=1)
    assert report.tier == "cross_process"

"""Whole models through the whole pipeline (parse, timed build, engine bytes, runtime) against onnxruntime."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest

from reprobuild.builder import Builder, BuilderConfig
from reprobuild.engine import Runtime
from reprobuild.frontend import network_from_onnx_bytes
from reprobuild.manifest import Manifest
from tests.helpers import BACKENDS, CUDA_SKIP, EXAMPLES, assert_close, light_model, model_inputs, ort_run


def build_and_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], backend: str,
                  iterations: int | None = None) -> tuple[dict[str, np.ndarray], Manifest]:
    network, _ = network_from_onnx_bytes(model.SerializeToString())
    result = Builder().build(network, BuilderConfig(backend=backend, iterations=iterations))
    context = Runtime().deserialize_engine(result.engine).create_execution_context()
    return context.execute(feeds), result.manifest


def check_evidence(manifest: Manifest) -> None:
    """Every layer lists every candidate; each one not excluded has all its timing samples and a median."""
    assert manifest.evidence is not None
    iterations = manifest.pinned.config.timing.iterations
    assert [e.name for e in manifest.evidence.layers] == [layer.name for layer in manifest.pinned.layers]
    for layer, evidence in zip(manifest.pinned.layers, manifest.evidence.layers):
        chosen = [c for c in evidence.candidates if c.status == "chosen"]
        assert len(chosen) == 1 and chosen[0].tactic == layer.tactic, layer.name
        for c in evidence.candidates:
            if c.status == "excluded":
                assert c.reason and not c.samples_ns
            else:
                # a candidate far slower than the fastest so far is stopped after one sample (STOP_FACTOR)
                assert c.median_ns is not None, (layer.name, c.tactic.name)
                assert len(c.samples_ns) == iterations or (len(c.samples_ns) == 1 and c.status == "lost"), (
                    layer.name, c.tactic.name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("example", ["mlp.onnx", "small_cnn.onnx"])
def test_bundled_examples_match_onnxruntime(example: str, backend: str, rng: np.random.Generator) -> None:
    model = onnx.load(os.path.join(EXAMPLES, example))
    feeds = model_inputs(model, rng)
    outputs, manifest = build_and_run(model, feeds, backend)
    (reference,) = ort_run(model, feeds)
    (name,) = outputs
    assert_close(outputs[name], reference, rtol=1e-4, atol=1e-6, rel=1e-5, what=f"{example} on {backend}")
    check_evidence(manifest)
    assert manifest.pinned.config.backend == backend


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["light_resnet50.onnx", "light_squeezenet.onnx"])
def test_light_models_match_onnxruntime(name: str, backend: str, rng: np.random.Generator) -> None:
    """ConstantOfShape weights are replaced by seeded random ones, or the outputs would prove almost nothing."""
    model = light_model(name, seed=int(rng.integers(2**31)))
    feeds = model_inputs(model, rng)
    outputs, manifest = build_and_run(model, feeds, backend, iterations=3)
    reference = ort_run(model, feeds)
    for out, ref in zip(outputs.values(), reference):
        assert_close(out, ref, rtol=1e-3, atol=1e-4, rel=1e-4, what=f"{name} on {backend}")
        assert float(ref.std()) > 1e-4, "the randomized model's output should not be uniform"
    check_evidence(manifest)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_light_resnet50_timed_build_then_replays_are_byte_identical(backend: str, rng: np.random.Generator) -> None:
    from reprobuild.builder import ReplaySelector

    data = light_model("light_resnet50.onnx", seed=int(rng.integers(2**31))).SerializeToString()
    timed = Builder().build(network_from_onnx_bytes(data)[0], BuilderConfig(backend=backend, iterations=3))
    results = [timed]
    for _ in range(2):
        config = BuilderConfig.from_record(results[-1].manifest.pinned.config)
        config.algorithm_selector = ReplaySelector(results[-1].manifest)
        results.append(Builder().build(network_from_onnx_bytes(data)[0], config))
    assert {r.engine_sha256 for r in results} == {timed.engine_sha256}
    assert results[1].manifest.pinned == timed.manifest.pinned == results[2].manifest.pinned
    assert results[1].tactics_timed == 0 and results[2].tactics_timed == 0


@pytest.mark.gpu
@pytest.mark.skipif(CUDA_SKIP is not None, reason=f"no CUDA: {CUDA_SKIP}")
def test_light_resnet50_is_deterministic_across_threads_streams_and_processes(rng: np.random.Generator) -> None:
    from reprobuild.engine.golden import golden_inputs
    from reprobuild.verify.run import VerifyPlan, check_against, verify

    data = light_model("light_resnet50.onnx", seed=int(rng.integers(2**31))).SerializeToString()
    result = Builder().build(network_from_onnx_bytes(data)[0], BuilderConfig(backend="cuda", iterations=3))
    engine = Runtime().deserialize_engine(result.engine)
    report = verify(engine, golden_inputs(engine.inputs, 0),
                    VerifyPlan(runs=20, contexts=2, threads=2, streams=2, processes=2))
    assert report.deterministic and report.tier == "cross_process", report.dimensions
    assert next(d for d in report.dimensions if d.name == "cross_stream").identical
    assert check_against(engine, result.manifest.pinned)[0].matched


@pytest.mark.gpu
@pytest.mark.skipif(CUDA_SKIP is not None, reason=f"no CUDA: {CUDA_SKIP}")
def test_forced_atomic_gemm_is_caught_and_located(rng: np.random.Generator) -> None:
    from reprobuild.builder import ForcingSelector
    from reprobuild.engine.golden import golden_inputs
    from reprobuild.verify.locate import locate
    from reprobuild.verify.run import VerifyPlan, verify

    data = light_model("light_resnet50.onnx", seed=int(rng.integers(2**31))).SerializeToString()
    config = BuilderConfig(backend="cuda", iterations=3, determinism="any",
                           algorithm_selector=ForcingSelector({"Gemm": "cuda_splitk_atomic"}))
    engine = Runtime().deserialize_engine(Builder().build(network_from_onnx_bytes(data)[0], config).engine)
    inputs = golden_inputs(engine.inputs, 0)
    report = verify(engine, inputs, VerifyPlan(runs=30, contexts=1))
    assert not report.deterministic
    found = locate(engine, inputs, attempts=30)
    assert found.layer is not None and found.layer.op == "Gemm"
    assert found.layer.tactic.startswith("gemm.cuda_splitk_atomic v") and (found.layer.max_ulp or 0) > 0

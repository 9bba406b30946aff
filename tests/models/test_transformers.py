"""Real transformer exports (``tests/data/transformers``: BERT, GPT-2 and Llama each with eager and SDPA attention,
Swin and ViT, as torch's dynamo exporter writes them) through the whole pipeline: every attention block becomes one
FusedAttention layer, the engine matches onnxruntime within float32 tolerance on fresh inputs, and on the CPU the
fused engine gives the bits of the engine built without ``fuse_attention``. The models are made by
``tests/models/make_transformers.py``; this file needs neither torch nor transformers.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from typing import Any

import numpy as np
import onnx
import pytest

from reprobuild.builder import Builder, BuilderConfig, BuildResult, ForcingSelector
from reprobuild.core.logger import Logger, Severity
from reprobuild.engine import Runtime
from reprobuild.frontend import network_from_onnx_bytes
from reprobuild.passes import DEFAULT_PASSES
from tests.helpers import BACKENDS, CUDA_SKIP, REPO, assert_close, ort_run, tactic_tolerance

DATA = os.path.join(REPO, "tests", "data", "transformers")
#: Each export and its number of attention blocks (layers; swin: 2 stages of 2 blocks).
BLOCKS = {"bert": 2, "bert_sdpa": 2, "gpt2": 2, "gpt2_sdpa": 2, "llama": 2, "llama_sdpa": 2, "swin": 4, "vit": 2}
#: The text models' vocabulary (make_transformers.py's configs).
VOCAB = 1000
#: Layers that fusion must leave no trace of, per model: RMSNorm, LayerNorm and Gelu fused too.
UNFUSED_OPS = ("Softmax", "IsNaN", "ReduceMean", "Erf", "Tanh", "Pow", "Sqrt", "Reciprocal")
NO_ATTENTION = tuple(p for p in DEFAULT_PASSES if p != "fuse_attention")
QUIET = Logger(Severity.ERROR)


def load(name: str) -> onnx.ModelProto:
    return onnx.load(os.path.join(DATA, f"{name}.onnx"))


def model_feeds(model: onnx.ModelProto, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Valid token ids; a 0/1 attention mask with each sequence right-padded by 1 to half its length (so some keys
    are masked in every row and no row is fully masked); images from N(0, 1)."""
    feeds = {}
    for vi in model.graph.input:
        shape = tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
        if vi.name == "input_ids":
            feeds[vi.name] = rng.integers(0, VOCAB, shape, dtype=np.int64)
        elif vi.name == "attention_mask":
            mask = np.ones(shape, np.int64)
            for row, pad in enumerate(rng.integers(1, shape[1] // 2 + 1, shape[0])):
                mask[row, shape[1] - pad:] = 0
            feeds[vi.name] = mask
        else:
            feeds[vi.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def build(model: onnx.ModelProto, backend: str = "cpu", **changes: Any) -> BuildResult:
    network, _ = network_from_onnx_bytes(model.SerializeToString(), QUIET)
    config = dataclasses.replace(BuilderConfig(backend=backend, warmup=0, iterations=1, runs_per_sample=1),
                                 **changes)
    return Builder(QUIET).build(network, config)


def run(result: BuildResult, feeds: dict[str, np.ndarray]) -> np.ndarray:
    (out,) = Runtime(QUIET).deserialize_engine(result.engine).create_execution_context().execute(feeds).values()
    return np.asarray(out)


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_every_attention_block_fuses_and_the_engine_matches_onnxruntime_and_the_unfused_bits(
        name: str, rng: np.random.Generator) -> None:
    model = load(name)
    fused = build(model)
    ops = Counter(layer.op for layer in fused.manifest.pinned.layers)
    assert ops["FusedAttention"] == BLOCKS[name] == sum(n.op_type == "Softmax" for n in model.graph.node), ops
    assert not [op for op in UNFUSED_OPS if ops[op]], f"{name}: left unfused: {ops}"
    # The layers both engines have run the tactics the fused build chose: tactics of one op need not agree bit for
    # bit (the patch embedding's Conv tactics do not), and timing picks among them; the attention chain's own layers
    # are left to timing.
    chosen = {layer.name: (layer.op, layer.tactic.name) for layer in fused.manifest.pinned.layers}
    network, _ = network_from_onnx_bytes(model.SerializeToString(), QUIET)
    same = {layer.name: chosen[layer.name][1] for layer in network.layers
            if chosen.get(layer.name, ("", ""))[0] == layer.op}
    plain = build(model, passes=NO_ATTENTION, algorithm_selector=ForcingSelector(same))
    assert not Counter(layer.op for layer in plain.manifest.pinned.layers)["FusedAttention"]
    for _ in range(2):  # fresh inputs each time
        feeds = model_feeds(model, rng)
        got = run(fused, feeds)
        (want,) = ort_run(model, feeds)
        assert_close(got, want, rtol=1e-4, atol=2e-5, rel=2e-6, what=f"{name} on cpu")
        assert float(want.std()) > 0.1, "the random-weight model's output should not be uniform"
        assert got.tobytes() == run(plain, feeds).tobytes(), f"{name}: the fused engine's bits differ"


def test_the_padding_mask_changes_what_the_text_models_compute(rng: np.random.Generator) -> None:
    """The attention mask reaches the fused layer: the same ids with more padding give other unpadded outputs (a
    fusion that dropped the mask step would not see it; onnxruntime agrees either way)."""
    model = load("bert_sdpa")
    fused = build(model)
    feeds = model_feeds(model, rng)
    padded = {**feeds, "attention_mask": feeds["attention_mask"].copy()}
    padded["attention_mask"][:, 4:] = 0
    got, more = run(fused, feeds), run(fused, padded)
    assert not np.allclose(got[:, :4], more[:, :4], atol=1e-3)
    assert_close(more, ort_run(model, padded)[0], rtol=1e-4, atol=2e-5, rel=2e-6, what="bert_sdpa padded")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_float16_builds_stay_near_onnxruntime_float32(name: str, backend: str, rng: np.random.Generator) -> None:
    model = load(name)
    result = build(model, backend, precision="fp16")
    assert Counter(layer.op for layer in result.manifest.pinned.layers)["FusedAttention"] == BLOCKS[name]
    feeds = model_feeds(model, rng)
    got = run(result, feeds)
    assert got.dtype == np.float32
    # float16 activations stored after every layer (measured: relative error ~1e-3, max abs error ~5e-3)
    assert_close(got, ort_run(model, feeds)[0], **tactic_tolerance(None, "float16"), what=f"{name} fp16 on {backend}")


@pytest.mark.gpu
@pytest.mark.skipif(CUDA_SKIP is not None, reason=f"no CUDA: {CUDA_SKIP}")
@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_on_cuda_every_export_fuses_and_matches_onnxruntime(name: str, rng: np.random.Generator) -> None:
    model = load(name)
    result = build(model, "cuda")
    assert Counter(layer.op for layer in result.manifest.pinned.layers)["FusedAttention"] == BLOCKS[name]
    for _ in range(2):
        feeds = model_feeds(model, rng)
        assert_close(run(result, feeds), ort_run(model, feeds)[0], **tactic_tolerance(None),
                     what=f"{name} on cuda")


@pytest.mark.gpu
@pytest.mark.skipif(CUDA_SKIP is not None, reason=f"no CUDA: {CUDA_SKIP}")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_on_cuda_every_export_runs_as_one_cuda_graph_with_the_eager_bits(
        name: str, precision: str, rng: np.random.Generator) -> None:
    """Issue 22's bar: every layer of every model of the set is a launch plan, so the engine runs as one CUDA graph
    (the manifest says so, or names the layers that are not); the graph's outputs are the eager run's bits."""
    model = load(name)
    result = build(model, "cuda", precision=precision)
    execution = result.manifest.pinned.execution
    assert execution.cuda_graph, f"{name} {precision}: {execution.reason}"
    engine = Runtime(QUIET).deserialize_engine(result.engine)
    graph, eager = (engine.create_execution_context(cuda_graph=g) for g in (True, False))
    feeds = model_feeds(model, rng)
    for _ in range(2):  # the second graph run replays the captured graph
        got, want = graph.execute(feeds), eager.execute(feeds)
        assert all(got[k].tobytes() == want[k].tobytes() for k in want), f"{name} {precision}: graph != eager"

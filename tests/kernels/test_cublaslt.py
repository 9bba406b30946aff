"""The cuBLASLt tactics (``kernels/cublaslt.py``, ``gemm.cuda_cublaslt``, ``gemm.cuda_cublaslt_epilogue``): an
algorithm recorded by value, checked before anything runs, and replayed exactly.

On the CPU: what a recorded algorithm must hold, the determinism a variant's split-K gives it, what a machine
without nvmath-python says. On a GPU with nvmath-python: every variant the heuristic offers against float64, run
twice and bound again from its recorded values (bitwise), inside a CUDA graph, and a whole build replayed to the
same engine bytes.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import pytest
from onnx import helper

from reprobuild.builder import Builder, BuilderConfig, ReplaySelector
from reprobuild.core.errors import BackendUnavailableError, BuildError, TacticMismatchError
from reprobuild.engine import Runtime
from reprobuild.frontend import network_from_onnx_bytes
from reprobuild.kernels import cublaslt
from reprobuild.kernels.gemm import CudaCublasLtFusedGemm, CudaCublasLtGemm
from reprobuild.kernels.tactic import Determinism, LayerSpec, TensorSig
from tests.helpers import CUDA_SKIP, make_model

LT_SKIP = CUDA_SKIP or cublaslt.unavailable_reason()
RECORD: dict[str, Any] = {"algo_id": 6, "tile": "TILE_128x128", "stages": "STAGES_64x3", "split_k": 1,
                          "reduction": "NONE", "swizzle": 0, "custom": 0, "inner_shape": "UNDEFINED",
                          "cluster_shape": "SHAPE_AUTO", "workspace": 0, "epilogue": "DEFAULT"}


def _matmul(rng: np.random.Generator, m: int, k: int, n: int, dtype: str, const_b: bool = True,
            batch: tuple[int, ...] = ()) -> LayerSpec:
    consts = {1: (rng.standard_normal((k, n)) / np.sqrt(k)).astype(dtype)} if const_b else {}
    return LayerSpec("mm", "MatMul", {}, (TensorSig((*batch, m, k), dtype), TensorSig((k, n), dtype)),
                     (TensorSig((*batch, m, n), dtype),), consts)


def _fused(rng: np.random.Generator, rows: int, k: int, n: int, dtype: str, activation: str = "") -> LayerSpec:
    consts = {1: (rng.standard_normal((k, n)) / np.sqrt(k)).astype(dtype), 2: rng.standard_normal(n).astype(dtype)}
    return LayerSpec("fg", "FusedGemm", {"activation": activation} if activation else {},
                     (TensorSig((rows, k), dtype), TensorSig((k, n), dtype), TensorSig((n,), dtype)),
                     (TensorSig((rows, n), dtype),), consts)


# --- CPU: the record --------------------------------------------------------------------------------------------

def test_a_recorded_algorithm_must_name_every_field_with_its_kind() -> None:
    assert cublaslt.parameter_problem(RECORD) is None
    assert cublaslt.parameter_problem({**RECORD, "tile": 17}) is None  # a member this nvmath does not name
    missing = {k: v for k, v in RECORD.items() if k != "stages"}
    assert "lack stages" in str(cublaslt.parameter_problem(missing))
    assert "besides" in str(cublaslt.parameter_problem({**RECORD, "kernel": "x"}))
    assert "split_k is '2'" in str(cublaslt.parameter_problem({**RECORD, "split_k": "2"}))
    assert "must not be negative" in str(cublaslt.parameter_problem({**RECORD, "workspace": -1}))
    assert cublaslt.parameter_problem({**RECORD, "split_k": -1}) is None  # what algorithms without split-K read
    assert "epilogue is 'GELU'" in str(cublaslt.parameter_problem({**RECORD, "epilogue": "GELU"}))
    assert "an integer" in str(cublaslt.parameter_problem({**RECORD, "swizzle": True}))


def test_binding_checks_the_record_and_a_split_k_algorithm_is_not_run_to_run() -> None:
    tactic = CudaCublasLtGemm()
    bound = tactic.with_parameters(RECORD)
    assert bound is not tactic and dict(bound.parameters) == RECORD
    assert bound.determinism is Determinism.RUN_TO_RUN and tactic.parameters == {}
    split = tactic.with_parameters({**RECORD, "split_k": 4, "reduction": "COMPUTE_TYPE"})
    assert split.determinism is Determinism.NONE and tactic.determinism is Determinism.RUN_TO_RUN
    assert split.code_sha256 == tactic.code_sha256 and split.label == tactic.label
    with pytest.raises(TacticMismatchError, match=r"gemm.cuda_cublaslt v1: .*lack algo_id"):
        tactic.with_parameters({k: v for k, v in RECORD.items() if k != "algo_id"})


def test_an_unbound_cublaslt_tactic_or_the_wrong_epilogue_is_refused_when_prepared(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cublaslt, "unavailable_reason", lambda: None)  # prepared, never bound: no library needed
    rng = np.random.default_rng(0)
    from reprobuild.kernels.backend import get_backend

    spec = _fused(rng, 8, 16, 24, "float32")
    with pytest.raises(BuildError, match="runs one recorded cuBLASLt algorithm"):
        CudaCublasLtFusedGemm().prepare(spec, get_backend("cpu"))
    wrong = CudaCublasLtFusedGemm().with_parameters(RECORD)  # DEFAULT, where the bias is fused: BIAS
    with pytest.raises(BuildError, match="recorded with epilogue DEFAULT on layer 'fg', which needs BIAS"):
        wrong.prepare(spec, get_backend("cpu"))


def test_the_epilogue_cublaslt_fuses_follows_the_layer() -> None:
    rng = np.random.default_rng(1)
    assert CudaCublasLtFusedGemm.fused(_fused(rng, 4, 8, 8, "float16")) == "BIAS"
    assert CudaCublasLtFusedGemm.fused(_fused(rng, 4, 8, 8, "float16", "Relu")) == "RELU_BIAS"
    assert CudaCublasLtFusedGemm.fused(_fused(rng, 4, 8, 8, "float16", "Sigmoid")) is None


@pytest.mark.skipif(cublaslt.unavailable_reason() is None, reason="nvmath-python is installed here")
def test_without_nvmath_the_source_says_what_to_install() -> None:
    spec = _matmul(np.random.default_rng(2), 4, 8, 8, "float16")
    reason = str(CudaCublasLtGemm().ineligibility(spec))
    assert reason.startswith("the cublaslt tactic source needs nvmath-python (pip install nvmath-python")
    assert cublaslt.version() == "unavailable (nvmath-python not installed)"
    from reprobuild.kernels.backend import get_backend

    with pytest.raises(BackendUnavailableError, match=r"layer 'mm' records tactic gemm.cuda_cublaslt v1 \(tactic "
                       r"source cublaslt, algo 6 tile TILE_128x128 .*needs nvmath-python"):
        CudaCublasLtGemm().with_parameters(RECORD).prepare(spec, get_backend("cpu"))


# --- GPU: every variant, bitwise ------------------------------------------------------------------------------

def _reference(spec: LayerSpec, xs: list[np.ndarray]) -> np.ndarray:
    a = xs[0].astype(np.float64)
    b = (spec.constants[1] if 1 in spec.constants else xs[1]).astype(np.float64)
    y = a @ b
    if spec.op == "FusedGemm":
        y = y + spec.constants[2].astype(np.float64)
        if spec.attrs.get("activation") == "Relu":
            y = np.maximum(y, 0.0)
    return y


@pytest.mark.gpu
@pytest.mark.skipif(LT_SKIP is not None, reason=f"no cuBLASLt: {LT_SKIP}")
@pytest.mark.parametrize("case", ["mm_fp16", "mm_bf16", "mm_fp32", "bmm_fp16", "bias_fp16", "relu_bias_bf16"])
def test_on_cuda_every_variant_matches_float64_and_replays_bitwise(case: str) -> None:
    from reprobuild.kernels.backend import get_backend
    from reprobuild.kernels.launch import timer

    rng = np.random.default_rng(zlib.crc32(case.encode()))
    tactic, spec = {
        "mm_fp16": (CudaCublasLtGemm(), _matmul(rng, 128, 768, 768, "float16")),
        "mm_bf16": (CudaCublasLtGemm(), _matmul(rng, 96, 512, 1024, "bfloat16")),
        "mm_fp32": (CudaCublasLtGemm(), _matmul(rng, 64, 256, 128, "float32")),
        "bmm_fp16": (CudaCublasLtGemm(), _matmul(rng, 128, 64, 128, "float16", const_b=False, batch=(12,))),
        "bias_fp16": (CudaCublasLtFusedGemm(), _fused(rng, 256, 768, 768, "float16")),
        "relu_bias_bf16": (CudaCublasLtFusedGemm(), _fused(rng, 200, 384, 1536, "bfloat16", "Relu")),
    }[case]
    backend = get_backend("cuda")
    assert tactic.ineligibility(spec) is None
    variants = tactic.variants(spec, backend)
    assert variants, f"cuBLASLt offers no algorithm for {case}"
    xs = [rng.standard_normal(spec.inputs[i].shape).astype(spec.inputs[i].dtype) for i in spec.activation_inputs]
    want = _reference(spec, xs)
    tol = {"float32": 1e-5, "float16": 4e-3, "bfloat16": 3e-2}[spec.inputs[0].dtype]
    with backend.activate():
        inputs = [backend.asarray(x) for x in xs]
        out = backend.xp.empty(spec.outputs[0].shape, dtype=spec.outputs[0].dtype)
        for v in variants:
            assert dict(v.parameters)["epilogue"] == tactic.matmul(spec, dict(spec.constants))[1]
            workspace = backend.empty_bytes(max(v.workspace_bytes(spec), 1))
            kernel = v.prepare(spec, backend)
            kernel(inputs, [out], workspace)
            first = backend.to_host(out)
            err = np.abs(first.astype(np.float64) - want).max() / max(1.0, np.abs(want).max())
            assert err <= tol, f"{cublaslt.label(v.parameters)}: relative error {err:.2e} over {tol}"
            timer(backend, kernel, inputs, [out], workspace, 1, 2)(2)  # inside a CUDA graph, as the builder times
            assert np.array_equal(backend.to_host(out), first), f"{cublaslt.label(v.parameters)} in a graph"
            again = tactic.with_parameters(dict(v.parameters)).prepare(spec, backend)  # rebuilt from the record
            out.fill(0)
            again(inputs, [out], workspace)
            assert np.array_equal(backend.to_host(out), first), f"{cublaslt.label(v.parameters)} rebound"


@pytest.mark.gpu
@pytest.mark.skipif(LT_SKIP is not None, reason=f"no cuBLASLt: {LT_SKIP}")
def test_on_cuda_a_recorded_algorithm_the_library_cannot_run_fails_closed_naming_it() -> None:
    from reprobuild.kernels.backend import get_backend

    spec = _matmul(np.random.default_rng(3), 64, 64, 64, "float16")
    backend = get_backend("cuda")
    bogus = CudaCublasLtGemm().with_parameters({**RECORD, "algo_id": 9999, "tile": 9999})
    with backend.activate():
        x = backend.asarray(np.ones((64, 64), np.float16))
        out = backend.xp.empty((64, 64), dtype=np.float16)
        with pytest.raises(cublaslt.CublasLtError, match="the recorded cuBLASLt algorithm algo 9999"):
            bogus.prepare(spec, backend)([x], [out], backend.empty_bytes(1))


def _mlp_model(rng: np.random.Generator) -> Any:
    w1 = (rng.standard_normal((256, 512)) / 16).astype(np.float32)
    b1 = rng.standard_normal(512).astype(np.float32)
    w2 = (rng.standard_normal((512, 128)) / 22).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["y"])]
    return make_model(nodes, {"x": [64, 256]}, ["y"], {"w1": w1, "b1": b1, "w2": w2})


@pytest.mark.gpu
@pytest.mark.skipif(LT_SKIP is not None, reason=f"no cuBLASLt: {LT_SKIP}")
def test_on_cuda_a_cublaslt_pinned_build_replays_to_the_same_engine_bytes() -> None:
    model = _mlp_model(np.random.default_rng(4)).SerializeToString()
    config = BuilderConfig(backend="cuda", precision="fp16", tactic_sources=("cublaslt", "cupy", "nvrtc"))
    built = Builder().build(network_from_onnx_bytes(model)[0], config)
    products = [layer for layer in built.manifest.pinned.layers if layer.op in ("MatMul", "Gemm", "FusedGemm")]
    assert products and all(layer.tactic.name.startswith("cuda_cublaslt") for layer in products)
    for layer in products:
        assert cublaslt.parameter_problem(layer.tactic.parameters) is None, layer.tactic.parameters
    replay = BuilderConfig.from_record(built.manifest.pinned.config)
    replay.algorithm_selector = ReplaySelector(built.manifest)
    again = Builder().build(network_from_onnx_bytes(model)[0], replay)
    assert again.engine == built.engine
    engine = Runtime().deserialize_engine(built.engine)
    x = np.random.default_rng(5).standard_normal((64, 256)).astype(np.float32)
    first = engine.create_execution_context().execute({"x": x})
    second = Runtime().deserialize_engine(again.engine).create_execution_context().execute({"x": x})
    assert all(np.array_equal(first[k], second[k]) for k in first)


def test_the_sources_are_named_and_a_replay_without_the_library_fails_closed_naming_it() -> None:
    """--tactic-sources takes cublaslt and cudnn; a replay whose recorded cuBLASLt variant this machine cannot
    run (no nvmath-python: the candidate is excluded with that reason) is refused with the source and the package."""
    from reprobuild.builder.replay import ReplaySelector
    from reprobuild.builder.selector import AlgorithmCandidate
    from reprobuild.cli.build import parse_tactic_sources
    from reprobuild.manifest import models as m

    assert parse_tactic_sources("cublaslt,cudnn,nvrtc") == ("cublaslt", "cudnn", "nvrtc")
    BuilderConfig(backend="cpu", tactic_sources=("cublaslt", "cudnn", "numpy"))  # known: no UsageError
    bound = CudaCublasLtGemm().with_parameters(RECORD)
    record = m.LayerRecord(name="mm", op="MatMul", key="k" * 64, attrs={}, inputs=[], outputs=[],
                           tactic=m.TacticRef(**bound.ref), workspace_bytes=0, onnx_nodes=["mm"], precision="fp16")
    candidate = AlgorithmCandidate(family=bound.family, name=bound.name, version=bound.version,
                                   code_sha256=bound.code_sha256, parameters=dict(bound.parameters), workspace_bytes=0,
                                   determinism=bound.determinism.value, source=bound.source, priority=bound.priority)
    why = ("the cublaslt tactic source needs nvmath-python (pip install nvmath-python, or the cublaslt extra), "
           "which does not load here: ModuleNotFoundError: No module named 'nvmath'")
    problem = ReplaySelector._tactic_problem(record, [], [(candidate, why)])
    assert problem == f"recorded tactic gemm.cuda_cublaslt v1 cannot be used here: {why}"


def test_a_cublaslt_launch_binds_each_operand_to_its_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan resolves A, B, C, the workspace and the bias (a weight the plan holds) and hands the addresses to
    cublaslt.bind_matmul in that order; its launches are described by the product's shape."""
    from types import SimpleNamespace

    from reprobuild.kernels import launch
    from reprobuild.kernels.backend import get_backend
    from reprobuild.kernels.launch import GemmLaunch, In, LibraryLaunchPlan, LtMatmulLaunch, Out, Ws

    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(launch.cublaslt, "bind_matmul", lambda x, *ptrs: calls.append((x, *ptrs)) or (lambda s: None))

    def buffer(ptr: int, nbytes: int) -> Any:
        return SimpleNamespace(data=SimpleNamespace(ptr=ptr), nbytes=nbytes)

    bias = buffer(9000, 64)
    gemm = GemmLaunch(transa=False, transb=False, m=16, n=8, k=4, a=bias, lda=16, stride_a=0, b=In(0), ldb=4,
                      stride_b=0, c=Out(0), ldc=16, stride_c=128, dtype="float16")
    lt = LtMatmulLaunch.of(gemm, {**RECORD, "epilogue": "BIAS"}, Ws(0), "BIAS", bias)
    plan = LibraryLaunchPlan(get_backend("cpu"), (lt,), (bias,))
    (step,) = plan.bind([buffer(1000, 256)], [buffer(2000, 256)], buffer(3000, 256), None)
    assert calls == [(lt, 9000, 1000, 2000, 3000, 9000)] and callable(step)
    assert plan.describe() == [f"{lt.kernel} m=16 n=8 k=4 batch=1"]
    assert lt.kernel == "cublaslt:matmul[float16,fp32,BIAS] algo=6 tile=TILE_128x128 stages=STAGES_64x3 split_k=1"

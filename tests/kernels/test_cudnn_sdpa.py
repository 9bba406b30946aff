"""The cuDNN SDPA tactic (``kernels/cudnn_sdpa.py``, ``attention.cuda_cudnn_sdpa``): an engine configuration recorded
by value, checked before anything runs, and replayed exactly.

On the CPU: the forms cuDNN's SDPA computes exactly and why the others are left, what a recorded plan must hold,
how a launch binds its operands, what a machine without the cuDNN frontend says. On a GPU with it: every variant
the heuristics offer against float64 on fresh random inputs (plain, grouped-query, additive mask, causal), run
twice and bound again from its recorded values (bitwise), inside a CUDA graph (also as its very first run), and a
record this library cannot rebuild exactly fails closed naming it.
"""

from __future__ import annotations

import enum
import re
import zlib
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from reprobuild.core.dtypes import np_dtype
from reprobuild.core.errors import BackendUnavailableError, BuildError, TacticMismatchError
from reprobuild.kernels import cudnn_sdpa
from reprobuild.kernels.attention import CudaCudnnSdpa, causal_mask, cudnn_problem, cudnn_unsupported
from reprobuild.kernels.launch import CudnnSdpaLaunch, In, LibraryLaunchPlan, Out, Ws
from reprobuild.kernels.tactic import Determinism, LayerSpec
from tests.helpers import CUDA_SKIP
from tests.kernels.test_attention import reference, spec

CUDNN_SKIP = CUDA_SKIP or cudnn_sdpa.unavailable_reason()
RECORD: dict[str, Any] = {"engine_id": 8, "knobs": "KERNEL_CFG=26;SPLIT_K=1", "plan": "eng8_k24=26_k26=1",
                          "workspace": 0, "cudnn_version": 91900, "frontend_version": "1.32.0"}


def _tril(sq: int, sk: int) -> np.ndarray:
    return np.tril(np.ones((sq, sk), dtype=bool))


def _causal_add(sq: int, sk: int, dtype: str = "float16") -> np.ndarray:
    return np.where(_tril(sq, sk), 0.0, -np.inf).astype(np_dtype(dtype)).reshape(1, 1, sq, sk)


# --- CPU: the forms ---------------------------------------------------------------------------------------------

Q = (2, 4, 16, 64)


@pytest.mark.parametrize(("layer", "reason"), [
    (spec(Q, Q, Q, [], dtype="float32"), "input 0 has dtype float32"),
    (spec(Q, Q, Q, [], guard="nan"), "a 'nan' guard after the Softmax"),
    (spec(Q, Q, Q, [((2, 1, 16, 16), "bool")], masks=("where",), fill=-1e4, guard="where_not"), "guard"),
    (spec(Q, Q, Q, [], softcap=5.0, softcap_in=5.0, softcap_op="Div"), "no softcap step"),
    (spec(Q, (2, 4, 64, 16), Q, [], k_transposed=1), "K as [..., D, Sk]"),
    (spec((4, 16, 64), (4, 16, 64), (4, 16, 64), []), "ranks [3, 3, 3, 3]"),
    (spec(Q, (1, 4, 16, 64), (1, 4, 16, 64), []), "K and V of batch 1, 1"),
    (spec((2, 4, 16, 36), (2, 4, 16, 36), (2, 4, 16, 36), []), "head dims 36 (Q, K) and 36 (V)"),
    (spec((2, 4, 16, 160), (2, 4, 16, 160), (2, 4, 16, 64), []), "up to 128"),
    (spec(Q, Q, Q, [((2, 1, 1, 16), "float16")], masks=("add",)), "broadcast over the batch and the heads only"),
    (spec(Q, Q, Q, [((1, 1, 16, 16), "float16")] * 2, masks=("add", "add")), "mask steps ['add', 'add']"),
    (spec(Q, Q, Q, [((2, 1, 16, 16), "bool")], masks=("where",), fill=float("-inf")), "exactly the top-left causal"),
    (spec(Q, Q, Q, [], constants={1: np.zeros(Q, np.float16)}), "constant"),
])
def test_forms_cudnn_cannot_compute_exactly_say_why(layer: LayerSpec, reason: str) -> None:
    got = CudaCudnnSdpa().ineligibility(layer)
    assert got is not None and reason in got, got


def test_the_forms_cudnn_takes_become_its_problem() -> None:
    plain = spec(Q, Q, Q, [], scale_op="Mul", scale=0.125)
    assert cudnn_unsupported(plain) is None
    p = cudnn_problem(plain)
    assert (p.dtype, p.batch, p.heads, p.k_heads, p.v_heads, p.sq, p.sk, p.d, p.dv) == (
        "float16", 2, 4, 4, 4, 16, 16, 64, 64)
    assert (p.scale, p.bias, p.causal) == (0.125, None, False)
    gqa = spec((2, 8, 5, 128), (2, 1, 40, 128), (2, 1, 40, 64), [((1, 8, 5, 40), "bfloat16")], "bfloat16",
               masks=("add",), scale_on="qk", scale_op="Mul", scale=128 ** -0.25)
    assert cudnn_unsupported(gqa) is None
    p = cudnn_problem(gqa)
    assert (p.heads, p.k_heads, p.v_heads, p.sk, p.dv, p.bias) == (8, 1, 1, 40, 64, (1, 8, 5, 40))
    assert p.scale == float(np.float32(128 ** -0.5))
    mask = spec(Q, Q, Q, [((16, 16), "float16")], masks=("add",))  # rank 2: broadcast over batch and heads
    assert cudnn_problem(mask).bias == (1, 1, 16, 16)


def test_a_causal_mask_is_recognized_only_when_exact() -> None:
    add = spec(Q, Q, Q, [((1, 1, 16, 16), "float16")], masks=("add",), constants={3: _causal_add(16, 16)})
    assert causal_mask(add) and cudnn_problem(add).causal and cudnn_problem(add).bias is None
    where = spec((1, 2, 8, 64), (1, 2, 12, 64), (1, 2, 12, 64), [((8, 12), "bool")], masks=("where",),
                 fill=float("-inf"), constants={3: _tril(8, 12)})
    assert causal_mask(where) and CudaCudnnSdpa().unsupported(where) in (None, cudnn_sdpa.unavailable_reason())
    where_not = spec((1, 2, 8, 64), (1, 2, 12, 64), (1, 2, 12, 64), [((1, 1, 8, 12), "bool")],
                     masks=("where_not",), fill=float("-inf"), constants={3: ~_tril(8, 12).reshape(1, 1, 8, 12)})
    assert causal_mask(where_not)
    finite = spec((1, 2, 8, 64), (1, 2, 12, 64), (1, 2, 12, 64), [((8, 12), "bool")], masks=("where",),
                  fill=-1e4, constants={3: _tril(8, 12)})
    assert not causal_mask(finite) and "exactly the top-left causal" in str(cudnn_unsupported(finite))
    shifted = spec((1, 2, 8, 64), (1, 2, 12, 64), (1, 2, 12, 64), [((8, 12), "bool")], masks=("where",),
                   fill=float("-inf"), constants={3: np.tril(np.ones((8, 12), bool), 4)})  # bottom-right: not ours
    assert not causal_mask(shifted)
    runtime = spec(Q, Q, Q, [((1, 1, 16, 16), "float16")], masks=("add",))  # a run-time mask: cuDNN's bias
    assert not causal_mask(runtime) and cudnn_problem(runtime).bias == (1, 1, 16, 16)
    almost = _causal_add(16, 16)
    almost[0, 0, 0, 1] = -30000.0  # not -inf: the bias computes it, exactly
    near = spec(Q, Q, Q, [((1, 1, 16, 16), "float16")], masks=("add",), constants={3: almost})
    assert not causal_mask(near) and cudnn_problem(near).bias == (1, 1, 16, 16)


# --- CPU: the record ----------------------------------------------------------------------------------------------

def test_a_recorded_plan_must_name_every_field_with_its_kind() -> None:
    assert cudnn_sdpa.parameter_problem(RECORD) is None
    assert cudnn_sdpa.parameter_problem({**RECORD, "knobs": ""}) is None
    missing = {k: v for k, v in RECORD.items() if k != "plan"}
    assert "lack plan" in str(cudnn_sdpa.parameter_problem(missing))
    assert "besides" in str(cudnn_sdpa.parameter_problem({**RECORD, "tile": 3}))
    assert "engine_id is 20500" in str(cudnn_sdpa.parameter_problem({**RECORD, "engine_id": 20500}))
    assert "workspace is -1" in str(cudnn_sdpa.parameter_problem({**RECORD, "workspace": -1}))
    assert "cudnn_version is True" in str(cudnn_sdpa.parameter_problem({**RECORD, "cudnn_version": True}))
    assert "knobs is 'SPLIT_K'" in str(cudnn_sdpa.parameter_problem({**RECORD, "knobs": "SPLIT_K"}))
    assert "plan is ''" in str(cudnn_sdpa.parameter_problem({**RECORD, "plan": ""}))


def test_knobs_are_recorded_sorted_by_name() -> None:
    knob = enum.Enum("knob", {"SPLIT_K": 3, "KERNEL_CFG": 24})  # as cudnn.knob_type's members: named
    assert cudnn_sdpa.encode_knobs({knob.SPLIT_K: 1, knob.KERNEL_CFG: 26}) == "KERNEL_CFG=26;SPLIT_K=1"
    assert cudnn_sdpa.encode_knobs({}) == ""


def test_binding_copies_the_tactic_with_the_record() -> None:
    tactic = CudaCudnnSdpa()
    bound = tactic.with_parameters(RECORD)
    assert bound is not tactic and dict(bound.parameters) == RECORD and tactic.parameters == {}
    assert bound.determinism is Determinism.RUN_TO_RUN  # nondeterministic engine configurations are never offered
    assert bound.code_sha256 == tactic.code_sha256 and bound.label == "attention.cuda_cudnn_sdpa v1"
    assert bound.workspace_bytes(spec(Q, Q, Q, [])) == 0
    assert tactic.with_parameters({**RECORD, "workspace": 4096}).workspace_bytes(spec(Q, Q, Q, [])) == 4096
    with pytest.raises(TacticMismatchError, match=r"attention\.cuda_cudnn_sdpa v1: .*lack engine_id"):
        tactic.with_parameters({k: v for k, v in RECORD.items() if k != "engine_id"})
    assert tactic.source == "cudnn" and tactic.capturable and tactic.per_layer_parameters


def test_an_unbound_tactic_is_refused_when_prepared(monkeypatch: pytest.MonkeyPatch) -> None:
    from reprobuild.kernels.backend import get_backend

    monkeypatch.setattr(cudnn_sdpa, "unavailable_reason", lambda: None)  # refused before the library is needed
    with pytest.raises(BuildError, match="runs one recorded cuDNN plan"):
        CudaCudnnSdpa().prepare(spec(Q, Q, Q, []), get_backend("cpu"))


def _buffer(ptr: int, nbytes: int) -> Any:
    return SimpleNamespace(data=SimpleNamespace(ptr=ptr), nbytes=nbytes)


def test_a_launch_binds_each_operand_to_its_address() -> None:
    from reprobuild.kernels.backend import get_backend

    calls: list[tuple[int, ...]] = []

    def bind(*ptrs: int) -> Any:
        calls.append(ptrs)
        return lambda stream: None

    problem = cudnn_problem(spec(Q, Q, Q, [((2, 1, 16, 16), "float16")], masks=("add",)))
    executable = SimpleNamespace(problem=problem, params=RECORD, bind=bind)
    bias = _buffer(9000, 1024)  # a constant mask: the plan holds its device array
    plan = LibraryLaunchPlan(get_backend("cpu"), (CudnnSdpaLaunch(executable, In(0), In(1), In(2), Out(0), Ws(0),
                                                                bias),), (bias,))
    inputs = [_buffer(1000, 16384), _buffer(2000, 16384), _buffer(3000, 16384)]
    (step,) = plan.bind(inputs, [_buffer(4000, 16384)], _buffer(5000, 256), None)
    assert calls == [(1000, 2000, 3000, 4000, 9000, 5000)] and callable(step)
    assert plan.describe() == [f"cudnn:sdpa[float16] {RECORD['plan']} {problem.describe()}"]


@pytest.mark.skipif(cudnn_sdpa.unavailable_reason() is None, reason="the cuDNN frontend is installed here")
def test_without_the_frontend_the_source_says_what_to_install() -> None:
    from reprobuild.kernels.backend import get_backend

    layer = spec(Q, Q, Q, [])
    reason = str(CudaCudnnSdpa().ineligibility(layer))
    assert reason.startswith("the cudnn tactic source needs the cuDNN frontend (pip install nvidia-cudnn-frontend")
    assert cudnn_sdpa.version() == "unavailable (nvidia-cudnn-frontend not installed)"
    with pytest.raises(BackendUnavailableError, match=r"layer 'attention' records tactic attention.cuda_cudnn_sdpa "
                       r"v1 \(tactic source cudnn, plan eng8_k24=26_k26=1 \(engine 8, cuDNN 91900\)\), and the "
                       r"cudnn tactic source needs the cuDNN frontend \(pip install nvidia-cudnn-frontend"):
        CudaCudnnSdpa().with_parameters(RECORD).prepare(layer, get_backend("cpu"))


# --- GPU: every variant, bitwise ----------------------------------------------------------------------------------

#: (rtol, atol) against float64: the scores stay in float32 inside cuDNN, the probabilities are rounded once.
TOLERANCE = {"float16": (1e-2, 3e-3), "bfloat16": (4e-2, 2e-2)}


def _case(name: str) -> LayerSpec:
    return {
        "plain_fp16_d64": spec((2, 4, 77, 64), (2, 4, 77, 64), (2, 4, 77, 64), [], scale=8.0),
        "plain_bf16_d128": spec((1, 8, 130, 128), (1, 8, 130, 128), (1, 8, 130, 128), [], "bfloat16",
                                scale_op="Mul", scale=128 ** -0.5),
        "gqa_fp16_d64": spec((2, 8, 64, 64), (2, 1, 96, 64), (2, 1, 96, 64), [], scale_on="q", scale_op="Mul",
                             scale=0.125),
        "bias_fp16_d64": spec((2, 4, 64, 64), (2, 4, 128, 64), (2, 4, 128, 64), [((2, 1, 64, 128), "float16")],
                              masks=("add",)),
        "causal_fp16_d32": spec((2, 4, 96, 32), (2, 4, 96, 32), (2, 4, 96, 32), [((96, 96), "bool")],
                                masks=("where",), fill=float("-inf"), constants={3: _tril(96, 96)}),
        "causal_add_bf16_d64": spec((1, 4, 64, 64), (1, 4, 64, 64), (1, 4, 64, 64), [((1, 1, 64, 64), "bfloat16")],
                                    "bfloat16", masks=("add",), constants={3: _causal_add(64, 64, "bfloat16")}),
    }[name]


def _values(layer: LayerSpec, rng: np.random.Generator) -> list[np.ndarray]:
    out = []
    for i, sig in enumerate(layer.inputs):
        if i in layer.constants:
            out.append(layer.constants[i])
        elif i >= 3:  # an additive mask: some scores pushed far down
            out.append(np.where(rng.random(sig.shape) < 0.2, -10000.0, rng.standard_normal(sig.shape))
                       .astype(np_dtype(sig.dtype)))
        else:
            out.append(rng.standard_normal(sig.shape).astype(np_dtype(sig.dtype)))
    return out


@pytest.mark.gpu
@pytest.mark.skipif(CUDNN_SKIP is not None, reason=f"no cuDNN: {CUDNN_SKIP}")
@pytest.mark.parametrize("case", ["plain_fp16_d64", "plain_bf16_d128", "gqa_fp16_d64", "bias_fp16_d64",
                                  "causal_fp16_d32", "causal_add_bf16_d64"])
def test_on_cuda_every_variant_matches_float64_and_replays_bitwise(case: str) -> None:
    from reprobuild.kernels.backend import get_backend
    from reprobuild.kernels.capture import capture
    from reprobuild.kernels.launch import timer

    layer, tactic, backend = _case(case), CudaCudnnSdpa(), get_backend("cuda")
    assert tactic.ineligibility(layer) is None, tactic.ineligibility(layer)
    assert cudnn_problem(layer).causal == case.startswith("causal")
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    values = _values(layer, rng)
    want = reference(layer, values)
    rtol, atol = TOLERANCE[layer.inputs[0].dtype]
    variants = tactic.variants(layer, backend)
    assert variants, f"cuDNN offers no plan for {case}"
    assert len({v.parameters["plan"] for v in variants}) == len(variants) <= cudnn_sdpa.CANDIDATES
    with backend.activate():
        inputs = [backend.asarray(x) for i, x in enumerate(values) if i not in layer.constants]
        out = backend.xp.empty(layer.outputs[0].shape, dtype=np_dtype(layer.outputs[0].dtype))
        for v in variants:
            name = cudnn_sdpa.label(v.parameters)
            assert cudnn_sdpa.parameter_problem(v.parameters) is None, v.parameters
            assert v.determinism is Determinism.RUN_TO_RUN and v.parameters["engine_id"] < 10_000
            workspace = backend.empty_bytes(max(v.workspace_bytes(layer), 1))
            kernel = v.prepare(layer, backend)
            out.fill(np.nan)
            kernel(inputs, [out], workspace)
            first = backend.to_host(out)
            np.testing.assert_allclose(first.astype(np.float64), want, rtol=rtol, atol=atol, err_msg=name)
            out.fill(np.nan)
            kernel(inputs, [out], workspace)
            assert np.array_equal(backend.to_host(out), first), f"{name}: two runs differ"
            out.fill(np.nan)
            timer(backend, kernel, inputs, [out], workspace, 1, 2)(2)  # inside a CUDA graph, as the builder times
            assert np.array_equal(backend.to_host(out), first), f"{name} in a graph"
            again = tactic.with_parameters(dict(v.parameters)).prepare(layer, backend)  # rebuilt from the record
            out.fill(np.nan)
            stream = backend.current_stream()
            graph = capture(stream, again.bind(inputs, [out], workspace, None))  # its very first run, captured
            graph.launch(stream)
            assert np.array_equal(backend.to_host(out), first), f"{name} rebound, first run in a graph"


@pytest.mark.gpu
@pytest.mark.skipif(CUDNN_SKIP is not None, reason=f"no cuDNN: {CUDNN_SKIP}")
def test_on_cuda_a_record_this_library_cannot_rebuild_exactly_fails_closed_naming_it() -> None:
    from reprobuild.kernels.backend import get_backend

    layer, backend = _case("plain_fp16_d64"), get_backend("cuda")
    (first, *_) = CudaCudnnSdpa().variants(layer, backend)
    record = dict(first.parameters)
    renamed = CudaCudnnSdpa().with_parameters({**record, "plan": "eng999_k1=1"})
    here = re.escape(str(record["plan"]))
    with pytest.raises(cudnn_sdpa.CudnnError,
                       match=rf"cuDNN plan eng999_k1=1 .*cannot be rebuilt exactly here: .* is plan {here} with this"):
        renamed.prepare(layer, backend)
    other = CudaCudnnSdpa().with_parameters({**record, "cudnn_version": record["cudnn_version"] + 1})
    with pytest.raises(cudnn_sdpa.CudnnError, match=r"was chosen with cuDNN .*; this machine has cuDNN"):
        other.prepare(layer, backend)
    bogus = CudaCudnnSdpa().with_parameters({**record, "engine_id": 9999, "plan": "eng9999"})
    with pytest.raises(cudnn_sdpa.CudnnError, match=r"the recorded cuDNN plan eng9999 .*cannot be rebuilt"):
        bogus.prepare(layer, backend)
    if record["workspace"] > 0:
        small = CudaCudnnSdpa().with_parameters({**record, "workspace": record["workspace"] - 1})
        with pytest.raises(cudnn_sdpa.CudnnError, match="workspace bytes here, more than"):
            small.prepare(layer, backend)


def _attention_model(rng: np.random.Generator) -> Any:
    """Swin-like attention as an exporter writes it: Q @ K^T (K's Transpose absorbed), the scale, a relative position
    bias per head, the Softmax and the product with V; fused into one FusedAttention that cuDNN takes."""
    from onnx import helper

    from tests.helpers import make_model

    b, h, s, d = 2, 4, 128, 64
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["q", "kt"], ["scores"]),
             helper.make_node("Mul", ["scores", "scale"], ["scaled"]),
             helper.make_node("Add", ["scaled", "bias"], ["masked"]),
             helper.make_node("Softmax", ["masked"], ["p"], axis=-1), helper.make_node("MatMul", ["p", "v"], ["y"])]
    inits = {"scale": np.array(d ** -0.5, np.float32), "bias": rng.standard_normal((1, h, s, s)).astype(np.float32)}
    return make_model(nodes, {n: (b, h, s, d) for n in "qkv"}, ["y"], inits)


@pytest.mark.gpu
@pytest.mark.skipif(CUDNN_SKIP is not None, reason=f"no cuDNN: {CUDNN_SKIP}")
def test_on_cuda_a_cudnn_pinned_build_replays_to_the_same_engine_bytes() -> None:
    from reprobuild.builder import Builder, BuilderConfig, ReplaySelector
    from reprobuild.engine import Runtime
    from reprobuild.frontend import network_from_onnx_bytes

    model = _attention_model(np.random.default_rng(4)).SerializeToString()
    config = BuilderConfig(backend="cuda", precision="fp16", tactic_sources=("cudnn", "cupy"))
    built = Builder().build(network_from_onnx_bytes(model)[0], config)
    (attention,) = [layer for layer in built.manifest.pinned.layers if layer.op == "FusedAttention"]
    assert attention.tactic.name == "cuda_cudnn_sdpa", attention.tactic
    assert cudnn_sdpa.parameter_problem(attention.tactic.parameters) is None, attention.tactic.parameters
    replay = BuilderConfig.from_record(built.manifest.pinned.config)
    replay.algorithm_selector = ReplaySelector(built.manifest)
    again = Builder().build(network_from_onnx_bytes(model)[0], replay)
    assert again.engine == built.engine
    rng = np.random.default_rng(5)
    feeds = {n: rng.standard_normal((2, 4, 128, 64)).astype(np.float32) for n in "qkv"}
    first = Runtime().deserialize_engine(built.engine).create_execution_context().execute(feeds)
    second = Runtime().deserialize_engine(again.engine).create_execution_context().execute(feeds)
    assert all(np.array_equal(first[k], second[k]) for k in first)


def test_an_exported_attention_fuses_into_a_form_cudnn_takes() -> None:
    from reprobuild.builder import BuilderConfig
    from reprobuild.builder.selection import layer_spec
    from reprobuild.frontend import network_from_onnx_bytes
    from reprobuild.passes import run_passes

    model = _attention_model(np.random.default_rng(4)).SerializeToString()
    passes = BuilderConfig(backend="cuda", precision="fp16").effective_passes
    network = run_passes(network_from_onnx_bytes(model)[0], passes)
    (index,) = [i for i, layer in enumerate(network.layers) if layer.op == "FusedAttention"]
    layer = layer_spec(network, index)
    assert cudnn_unsupported(layer) is None
    assert cudnn_problem(layer) == cudnn_sdpa.SdpaProblem(dtype="float16", batch=2, heads=4, k_heads=4, v_heads=4,
                                                          sq=128, sk=128, d=64, dv=64, scale=0.125,
                                                          bias=(1, 4, 128, 128))

"""The capturable tactics' kernels (index.cu, reduction.cu, norm.cu's RMSNormalization, the generated logic
sources) run on the host through ``host_cuda`` (g++, every thread of a small grid): each layer is prepared by the
tactic's own ``prepare`` and its launch plan run, then compared with the op's NumPy reference. This checks the C
of the kernels and the arguments the tactics pass on a machine without a GPU; the ``gpu`` tests check the device.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from reprobuild.core.dtypes import FLOATS, np_dtype
from reprobuild.kernels.index import CudaGather, CudaGatherNDConstant, CudaStridedGather
from reprobuild.kernels.launch import LaunchPlan
from reprobuild.kernels.logic import CudaLogic
from reprobuild.kernels.norm import CudaRmsNorm
from reprobuild.kernels.reduction import CudaCumSum, CudaReduce
from reprobuild.kernels.tactic import LayerSpec, Tactic
from tests.kernels.host_cuda import HostBackend, host_kernels, run_plan
from tests.kernels.test_capture_tactics import GATHER_CASES, LOGIC_CASES, random, reference, spec

TOLERANCE = {"float16": (1e-2, 1e-3), "bfloat16": (2e-2, 1e-2), "float32": (1e-5, 1e-6)}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("host_cuda")


@pytest.fixture
def host(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HostBackend]:
    with host_kernels(workdir, monkeypatch) as backend:
        yield backend


#: Bytes of a known pattern on each side of every buffer a host run gives a plan: a kernel that writes past its
#: output (or into its inputs) fails the run, as it would corrupt a neighbour's memory on the GPU.
GUARD, PATTERN = 256, 0xA5


def _guarded(shape: tuple[int, ...], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """A buffer of ``shape`` inside a larger one whose GUARD bytes on each side hold PATTERN: (raw, view)."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.full(GUARD + nbytes + GUARD, PATTERN, dtype=np.uint8)
    return raw, raw[GUARD:GUARD + nbytes].view(dtype).reshape(shape)


def run_host(tactic: Tactic, layer: LayerSpec, activations: list[np.ndarray], backend: HostBackend) -> list[np.ndarray]:
    """The tactic's plan for ``layer`` run on the host; outputs start as NaN (or 0x5A bytes), so an element no
    thread writes shows; every buffer is guarded (GUARD), and the inputs must keep their values."""
    assert tactic.ineligibility(layer) is None, tactic.ineligibility(layer)
    plan = tactic.prepare(layer, backend)
    assert isinstance(plan, LaunchPlan)
    raws, inputs, outputs = [], [], []
    for a in activations:
        raw, view = _guarded(a.shape, a.dtype)
        view[...] = a
        raws.append(raw)
        inputs.append(view)
    for sig in layer.outputs:
        raw, out = _guarded(sig.shape, np_dtype(sig.dtype))
        out.reshape(-1).view(np.uint8)[:] = 0x5A
        if sig.dtype in FLOATS:
            out[...] = np.nan
        raws.append(raw)
        outputs.append(out)
    run_plan(plan, inputs, outputs)
    for i, raw in enumerate(raws):
        assert (raw[:GUARD] == PATTERN).all() and (raw[-GUARD:] == PATTERN).all(), \
            f"{tactic.label} wrote outside buffer {i} on {layer.op} {layer.inputs}"
    for i, (got, want) in enumerate(zip(inputs, activations)):
        assert got.tobytes() == np.ascontiguousarray(want).tobytes(), f"{tactic.label} changed input {i}"
    return [np.array(o) for o in outputs]


def exact(tactic: Tactic, layer: LayerSpec, activations: list[np.ndarray], backend: HostBackend) -> None:
    for got, want in zip(run_host(tactic, layer, activations, backend), reference(layer, activations)):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got.reshape(-1).view(np.uint8), want.reshape(-1).view(np.uint8),
                                      err_msg=f"{layer.op} {layer.attrs}")


def close(tactic: Tactic, layer: LayerSpec, activations: list[np.ndarray], backend: HostBackend) -> None:
    for got, want in zip(run_host(tactic, layer, activations, backend), reference(layer, activations)):
        rtol, atol = TOLERANCE[str(got.dtype)]
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol,
                                   err_msg=f"{layer.op} {layer.attrs} {layer.inputs}")


def test_strided_gather_runs_every_case(host: HostBackend) -> None:
    rng = np.random.default_rng(11)
    for layer in GATHER_CASES:
        exact(CudaStridedGather(), layer, [random(rng, layer.inputs[0].shape, layer.inputs[0].dtype)], host)


def test_strided_gather_runs_the_node_suite(host: HostBackend) -> None:
    from reprobuild.builder.selection import layer_spec
    from reprobuild.conformance.cases import node_cases
    from reprobuild.conformance.runner import parse_case
    from reprobuild.core.errors import ReprobuildError

    ops, checked = set(CudaStridedGather.ops), 0
    for case in node_cases():
        graph = case.proto.graph
        if len(graph.node) != 1 or graph.node[0].op_type not in ops:
            continue
        try:
            network, _ = parse_case(case)
        except ReprobuildError:
            continue
        layer = layer_spec(network, 0) if len(network.layers) == 1 else None
        if layer is None or layer.op not in ops or CudaStridedGather().ineligibility(layer) is not None:
            continue
        values = {**case.inputs, **network.constants}
        exact(CudaStridedGather(), layer, [values[network.layers[0].inputs[0]]], host)
        checked += 1
    assert checked >= 20


def test_gathers_run(host: HostBackend) -> None:
    rng = np.random.default_rng(12)
    table = random(rng, (50, 6), "float16")
    for index_dtype in ("int64", "int32"):
        layer = spec("Gather", [((50, 6), "float16"), ((2, 9), index_dtype)], [((2, 9, 6), "float16")],
                     {0: table}, axis=0)
        exact(CudaGather(), layer, [rng.integers(-50, 50, (2, 9)).astype(index_dtype)], host)
        odd = spec("Gather", [((4, 5, 3), "bool"), ((2,), index_dtype)], [((4, 2, 3), "bool")], axis=1)
        exact(CudaGather(), odd, [random(rng, (4, 5, 3), "bool"), np.array([4, -5], dtype=index_dtype)], host)
    rows = np.stack(np.meshgrid(np.arange(2), np.arange(16), indexing="ij"), -1).reshape(2, 1, 1, 16, 2)
    mask = spec("GatherND", [((2, 16), "bool"), ((2, 1, 1, 16, 2), "int64")], [((2, 1, 1, 16), "bool")], {1: rows},
                batch_dims=0)
    exact(CudaGatherNDConstant(), mask, [random(rng, (2, 16), "bool")], host)
    batched = spec("GatherND", [((2, 3, 4), "int64"), ((2, 2, 1), "int64")], [((2, 2, 4), "int64")],
                   {1: np.array([[[1], [-3]], [[2], [0]]])}, batch_dims=1)
    exact(CudaGatherNDConstant(), batched, [random(rng, (2, 3, 4), "int64")], host)


def test_an_out_of_range_runtime_index_gives_zeros(host: HostBackend) -> None:
    layer = spec("Gather", [((5, 4), "float32"), ((3,), "int64")], [((3, 4), "float32")], axis=0)
    x = np.arange(20, dtype=np.float32).reshape(5, 4)
    got = run_host(CudaGather(), layer, [x, np.array([1, 5, -6])], host)[0]
    np.testing.assert_array_equal(got, np.stack([x[1], np.zeros(4, np.float32), np.zeros(4, np.float32)]))


def _logic_inputs(layer: LayerSpec, rng: np.random.Generator) -> list[np.ndarray]:
    values = []
    for i, sig in enumerate(layer.inputs):
        if i in layer.constants:
            continue
        v = random(rng, sig.shape, sig.dtype)
        if sig.dtype in FLOATS and v.size >= 4:
            v.reshape(-1)[:4] = [np.nan, np.inf, -np.inf, -0.0]
        values.append(v)
    return values


def test_logic_kernels_run_every_case(host: HostBackend) -> None:
    rng = np.random.default_rng(13)
    for layer in LOGIC_CASES:
        exact(CudaLogic(), layer, _logic_inputs(layer, rng), host)
    casts = [("float32", "int32"), ("float16", "bool"), ("bfloat16", "float16"), ("int64", "int32"),
             ("bool", "bfloat16"), ("int32", "int64"), ("float32", "float16"), ("bfloat16", "int64")]
    for source, target in casts:
        layer = spec("Cast", [((5, 40), source)], [((5, 40), target)], to=target, saturate=1, round_mode="up")
        x = _logic_inputs(layer, rng)[0]
        if source in FLOATS:
            with np.errstate(over="ignore"):  # past the int32 and float16 ranges too
                x = (x.astype(np.float32) * np.float32(3e4)).astype(x.dtype)
            x.reshape(-1)[:4] = [np.nan, np.inf, -np.inf, -0.0]
        exact(CudaLogic(), layer, [x], host)
    big = spec("Cast", [((4, 64), "int64")], [((4, 64), "bfloat16")], to="bfloat16", saturate=1, round_mode="up")
    exact(CudaLogic(), big, [rng.integers(-2**62, 2**62, (4, 64))], host)
    half = spec("Cast", [((4, 64), "int64")], [((4, 64), "float16")], to="float16", saturate=1, round_mode="up")
    exact(CudaLogic(), half, [rng.integers(-70000, 70000, (4, 64))], host)


def test_integer_arithmetic_runs_exactly(host: HostBackend) -> None:
    rng = np.random.default_rng(14)
    for dtype in ("int64", "int32"):
        info = np.iinfo(np_dtype(dtype))
        a = rng.integers(info.min, info.max, (6, 40), dtype=np_dtype(dtype), endpoint=True)
        b = rng.integers(-9, 9, (40,), dtype=np_dtype(dtype))
        a[0, :4] = [info.min, info.min, info.max, -7]
        b[:4] = [-1, 3, 0, 2]
        for op in ("Add", "Sub", "Mul", "Div", "Max", "Min"):
            with np.errstate(all="ignore"):
                exact(CudaLogic(), spec(op, [((6, 40), dtype), ((40,), dtype)], [((6, 40), dtype)]), [a, b], host)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_reductions_run(dtype: str, host: HostBackend) -> None:
    rng = np.random.default_rng(15)
    for op, shape, axes, keep in [("ReduceMean", (4, 3, 700), (2,), 1), ("ReduceSum", (2, 300, 5), (1,), 0),
                                  ("ReduceMax", (3, 5, 7, 7), (2, 3), 1), ("ReduceMin", (6, 100), (0, 1), 0),
                                  ("ReduceMax", (8, 33), (0,), 1), ("ReduceSum", (3, 0, 4), (1,), 1),
                                  ("ReduceMean", (2, 9, 4), (1,), 0)]:
        out = tuple(1 if d in axes else n for d, n in enumerate(shape) if keep or d not in axes)
        layer = spec(op, [(shape, dtype)], [(out, dtype)], axes=axes, keepdims=keep)
        x = random(rng, shape, dtype)
        if x.size > 5:
            x.reshape(-1)[5] = np.nan
        close(CudaReduce(), layer, [x], host)


@pytest.mark.parametrize("dtype", ["int64", "int32", "bool"])
def test_exact_reductions_run(dtype: str, host: HostBackend) -> None:
    rng = np.random.default_rng(18)
    ops = ("ReduceMax", "ReduceMin") if dtype == "bool" else ("ReduceSum", "ReduceMax", "ReduceMin")
    for op in ops:
        for shape, axes, keep in [((4, 3, 70), (2,), 1), ((2, 30, 5), (1,), 0), ((6, 10), (0, 1), 0),
                                  ((3, 0, 4), (1,), 1)]:
            out = tuple(1 if d in axes else n for d, n in enumerate(shape) if keep or d not in axes)
            layer = spec(op, [(shape, dtype)], [(out, dtype)], axes=axes, keepdims=keep)
            x = random(rng, shape, dtype)
            if dtype != "bool" and x.size:
                info = np.iinfo(np_dtype(dtype))
                x.reshape(-1)[:3] = [info.max, info.max, info.min]  # sums wrap
            exact(CudaReduce(), layer, [x], host)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "int64", "int32"])
def test_cumsum_runs(dtype: str, host: HostBackend) -> None:
    rng = np.random.default_rng(16)
    for shape, axis, exclusive, reverse in [((2, 300), 1, 0, 0), ((2, 30), 1, 1, 0), ((5, 7, 3), 0, 0, 1),
                                            ((4, 33, 6), 1, 1, 1)]:
        layer = spec("CumSum", [(shape, dtype)], [(shape, dtype)], axis=axis, exclusive=exclusive, reverse=reverse)
        x = random(rng, shape, dtype)
        if dtype in ("float32", "int64", "int32"):  # the same additions in the same order as NumPy
            exact(CudaCumSum(), layer, [x], host)
        else:
            close(CudaCumSum(), layer, [x], host)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_rms_normalization_runs(dtype: str, host: HostBackend) -> None:
    rng = np.random.default_rng(17)
    for shape, axis, scale_shape in [((2, 5, 300), 2, (300,)), ((3, 4, 10), 1, (1, 4, 10)), ((4, 64), 1, (64,))]:
        scale = random(rng, scale_shape, dtype)
        layer = spec("RMSNormalization", [(shape, dtype), (scale_shape, dtype)], [(shape, dtype)], {1: scale},
                     axis=axis, epsilon=1e-5, stash_type=1)
        close(CudaRmsNorm(), layer, [random(rng, shape, dtype)], host)
        runtime = spec("RMSNormalization", [(shape, dtype), (shape[axis:], dtype)], [(shape, dtype)], axis=axis,
                       epsilon=1e-5, stash_type=1)
        close(CudaRmsNorm(), runtime, [random(rng, shape, dtype), random(rng, shape[axis:], dtype)], host)

"""The NVRTC tactics that make transformer layers capturable (issue 22): the strided gather (Slice, Split, Expand,
Tile, Pad), the run-time Gather, the generated logic kernel (comparisons, bool logic, IsNaN/IsInf, Where, Cast),
the reductions and RMSNormalization.

On the CPU: the host-side maps and views, checked by emulating the strided-gather kernel in NumPy against each
op's reference on fresh random inputs and on ONNX's node-suite cases; the reasons ``unsupported`` gives; and
(where ``nvcc`` is installed) that generated sources compile. On a GPU host (``gpu`` mark): each tactic against
the NumPy reference tactic on transformer-shaped cases.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reprobuild.core.dtypes import np_dtype
from reprobuild.kernels.backend import get_backend
from reprobuild.kernels.index import (
    Axis,
    CudaGather,
    CudaGatherNDConstant,
    CudaStridedGather,
    expand_map,
    fill_bits,
    gather_nd_offsets,
    layer_maps,
    simplify,
    slice_map,
)
from reprobuild.kernels.launch import LaunchPlan
from reprobuild.kernels.logic import CudaLogic, generate_source
from reprobuild.kernels.norm import CudaRmsNorm
from reprobuild.kernels.reduction import CudaCumSum, CudaReduce, reduction_view
from reprobuild.kernels.tactic import LayerSpec, Tactic, TensorSig
from reprobuild.registry import default_registry
from tests.helpers import CUDA_SKIP
from tests.kernels.pin_tactics import run_tactic

KERNELS = Path(__file__).resolve().parents[2] / "kernels"


def spec(op: str, inputs: Sequence[tuple[tuple[int, ...], str]], outputs: Sequence[tuple[tuple[int, ...], str]],
         constants: dict[int, np.ndarray] | None = None, **attrs: Any) -> LayerSpec:
    return LayerSpec("layer", op, attrs, tuple(TensorSig(tuple(s), d) for s, d in inputs),
                     tuple(TensorSig(tuple(s), d) for s, d in outputs), constants or {})


def reference(layer: LayerSpec, activations: list[np.ndarray]) -> list[np.ndarray]:
    """The op's NumPy reference tactic on the CPU: what every CUDA tactic must agree with."""
    tactic = next(t for t in default_registry().candidates(layer.op, "cpu") if t.family == "reference")
    return run_tactic(tactic, layer, activations, get_backend("cpu"))


def emulate(layer: LayerSpec, x: np.ndarray) -> list[np.ndarray]:
    """What the strided-gather kernel writes for ``layer`` (index.cu's loop, in NumPy, on the simplified maps)."""
    flat = np.ascontiguousarray(x).reshape(-1)
    fill = np.asarray(layer.attr("value", 0) if layer.op == "Pad" else 0).astype(x.dtype)
    outs = []
    for (axes, base), sig in zip(layer_maps(layer), layer.outputs):
        axes = simplify(axes)
        total = int(np.prod([a.size for a in axes], dtype=np.int64))
        t, off = np.arange(total, dtype=np.int64), np.full(total, base, dtype=np.int64)
        inside = np.ones(total, dtype=bool)
        for a in reversed(axes):
            q = t % a.size
            t //= a.size
            inside &= (q >= a.lo) & (q < a.hi)
            off += (q % a.mod) * a.coef
        assert (off[inside] >= 0).all() and (off[inside] < flat.size).all(), "a read outside the input"
        values = flat[np.where(inside, off, 0)] if flat.size else np.zeros(total, dtype=x.dtype)
        outs.append(np.where(inside, values, fill).reshape(sig.shape))
    return outs


def random(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if np.dtype(np_dtype(dtype)).kind in "iu":
        return rng.integers(-50, 50, shape).astype(np_dtype(dtype))
    return rng.standard_normal(shape).astype(np.float32).astype(np_dtype(dtype))


# --- the strided gather's maps (CPU) ---------------------------------------------------------------------------

def test_a_broadcast_mask_is_a_rank_3_map() -> None:
    axes = simplify(expand_map((2, 1, 1, 16), (2, 12, 16, 16)))
    assert [a.size for a in axes] == [2, 12 * 16, 16]
    assert [a.coef for a in axes] == [16, 0, 1]


def test_a_slice_of_the_last_axis_merges_the_leading_ones_and_size_1_dimensions_drop() -> None:
    axes, base = slice_map((4, 8, 64), (0, 0, 32), (1, 1, 1), (4, 8, 32))
    assert [(a.size, a.coef) for a in simplify(axes)] == [(32, 64), (32, 1)] and base == 32
    axes, base = slice_map((1, 8, 1), (0, 7, 0), (1, -1, 1), (1, 8, 1))
    assert simplify(axes) == [Axis(8, 8, -1, 0, 8)] and base == 7


def test_a_whole_reversal_is_one_dimension() -> None:
    axes, base = slice_map((4, 5), (3, 4), (-1, -1), (4, 5))
    assert simplify(axes) == [Axis(20, 20, -1, 0, 20)] and base == 19


def test_fill_bits_are_the_stored_values_bits() -> None:
    assert fill_bits(1.0, "float16") == np.uint64(0x3C00)
    assert fill_bits(-2.0, "float32") == np.uint64(0xC0000000)
    assert fill_bits(-1, "int64") == np.uint64(2**64 - 1)
    assert fill_bits(1, "bool") == np.uint64(1)
    assert fill_bits(1.0, "bfloat16") == np.uint64(0x3F80)


GATHER_CASES = [
    spec("Slice", [((2, 6, 5), "float32")], [((2, 3, 2), "float32")], starts=(0, 5, 4), ends=(2, -1, 0),
         steps=(1, -2, -3)),
    spec("Slice", [((3, 7), "int64")], [((3, 3), "int64")], starts=(0, 1), ends=(3, 4), steps=(1, 1)),
    spec("Slice", [((4, 1, 9), "float16")], [((2, 1, 9), "float16")], starts=(3, 0, 0), ends=(-1, 1, 9),
         steps=(-2, 1, 1)),
    spec("Split", [((2, 10, 3), "bfloat16")], [((2, 3, 3), "bfloat16"), ((2, 0, 3), "bfloat16"),
                                                ((2, 7, 3), "bfloat16")], axis=1, split=(3, 0, 7)),
    spec("Expand", [((2, 1, 1, 5), "bool")], [((2, 3, 5, 5), "bool")], shape=(2, 3, 5, 5)),
    spec("Expand", [((3, 1), "float32")], [((2, 3, 4), "float32")], shape=(2, 3, 4)),
    spec("Tile", [((2, 3, 1), "int32")], [((4, 3, 5), "int32")], repeats=(2, 1, 5)),
    spec("Tile", [((1, 4), "float32")], [((3, 8), "float32")], repeats=(3, 2)),
    spec("Pad", [((2, 3, 4), "float32")], [((2, 5, 3), "float32")], mode="constant", pads=(0, 1, 0, 0, 1, -1),
         value=0.5),
    spec("Pad", [((3, 4), "float16")], [((1, 8), "float16")], mode="constant", pads=(-1, 2, -1, 2),
         value=-1.0),
    spec("Pad", [((0, 2), "int64")], [((2, 2), "int64")], mode="constant", pads=(1, 0, 1, 0), value=7),
    spec("Pad", [((2, 3), "bool")], [((2, 5), "bool")], mode="constant", pads=(0, 2, 0, 0), value=1),
]


@pytest.mark.parametrize("layer", GATHER_CASES, ids=lambda s: f"{s.op}-{s.inputs[0].dtype}-{list(s.inputs[0].shape)}")
def test_the_strided_gather_map_computes_the_reference(layer: LayerSpec) -> None:
    assert CudaStridedGather().ineligibility(layer) is None
    x = random(np.random.default_rng(len(layer.outputs[0].shape)), layer.inputs[0].shape, layer.inputs[0].dtype)
    for got, want in zip(emulate(layer, x), reference(layer, [x])):
        np.testing.assert_array_equal(got, want)


def test_the_strided_gather_map_computes_every_node_suite_case() -> None:
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
        if len(network.layers) != 1 or network.layers[0].op not in ops:
            continue
        layer = layer_spec(network, 0)
        if CudaStridedGather().ineligibility(layer) is not None:
            continue
        values = {**case.inputs, **network.constants}
        x = values[network.layers[0].inputs[0]]
        for got, want in zip(emulate(layer, x), reference(layer, [x])):
            np.testing.assert_array_equal(got, want, err_msg=case.name)
        checked += 1
    assert checked >= 20, f"only {checked} node-suite cases ran"


def emulate_gather_nd(layer: LayerSpec, x: np.ndarray) -> np.ndarray:
    """What the gather_rows kernel writes for a GatherND layer (index.cu's loop, in NumPy)."""
    offsets, inner = gather_nd_offsets(layer.inputs[0].shape, layer.constants[1], int(layer.attr("batch_dims")))
    flat = np.ascontiguousarray(x).reshape(-1)
    return flat[(offsets[:, None] + np.arange(inner)).reshape(-1)].reshape(layer.outputs[0].shape)


def test_gather_nd_offsets_compute_the_reference() -> None:
    rng = np.random.default_rng(9)
    mask_rows = np.stack(np.meshgrid(np.arange(2), np.arange(16), indexing="ij"), -1).reshape(2, 1, 1, 16, 2)
    for data_shape, indices, b, out_shape in [
        ((2, 16), mask_rows, 0, (2, 1, 1, 16)),  # the text models' mask: a reshape written as a GatherND
        ((3, 4, 5), np.array([[0, -1], [2, 3]]), 0, (2, 5)),
        ((2, 3, 4), np.array([[[1], [-3]], [[2], [0]]]), 1, (2, 2, 4)),
        ((2, 3, 4, 5), np.array([[[1, 2, -1]], [[0, 0, 0]]]), 1, (2, 1)),
    ]:
        layer = spec("GatherND", [(data_shape, "bool"), (indices.shape, "int64")], [(out_shape, "bool")],
                     {1: indices}, batch_dims=b)
        assert CudaGatherNDConstant().ineligibility(layer) is None
        x = random(rng, data_shape, "bool")
        np.testing.assert_array_equal(emulate_gather_nd(layer, x), reference(layer, [x])[0])


# --- what each tactic refuses, and why (CPU) -------------------------------------------------------------------

def test_unsupported_cases_say_why() -> None:
    reflect = spec("Pad", [((2, 3), "float32")], [((2, 5), "float32")], mode="reflect", pads=(0, 1, 0, 1), value=0.0)
    assert "constant mode only" in (CudaStridedGather().unsupported(reflect) or "")
    runtime = spec("Pad", [((2, 3), "float32"), ((), "float32")], [((2, 5), "float32")], mode="constant",
                   pads=(0, 1, 0, 1), value=0.0)
    assert "run time" in (CudaStridedGather().unsupported(runtime) or "")
    const_idx = spec("Gather", [((5, 4), "float32"), ((2,), "int64")], [((2, 4), "float32")],
                     {1: np.array([0, 1])}, axis=0)
    assert "cuda_gather_const" in (CudaGather().unsupported(const_idx) or "")
    runtime_nd = spec("GatherND", [((5, 4), "float32"), ((2, 1), "int64")], [((2, 4), "float32")], batch_dims=0)
    assert "constant indices" in (CudaGatherNDConstant().unsupported(runtime_nd) or "")
    int_mean = spec("ReduceMean", [((2, 3), "int64")], [((2,), "int64")], axes=(1,), keepdims=0)
    assert "rounded toward zero" in (CudaReduce().unsupported(int_mean) or "")
    scattered = spec("ReduceSum", [((2, 3, 4), "float32")], [((3,), "float32")], axes=(0, 2), keepdims=0)
    assert "contiguous" in (CudaReduce().unsupported(scattered) or "")
    float_add = spec("Add", [((4,), "float32"), ((4,), "float32")], [((4,), "float32")])
    assert "fused elementwise" in (CudaLogic().unsupported(float_add) or "")
    wide = spec("Cast", [((4,), "float64")], [((4,), "float16")], to="float16")
    assert "casts float64 to float16" in (CudaLogic().unsupported(wide) or "")
    f64 = spec("RMSNormalization", [((2, 8), "float32"), ((8,), "float32")], [((2, 8), "float32")],
               {1: np.ones(8, np.float32)}, axis=1, epsilon=1e-5, stash_type=11)
    assert "stash_type" in (CudaRmsNorm().unsupported(f64) or "")
    runtime_scale = spec("RMSNormalization", [((2, 8), "float32"), ((1, 8), "float32")], [((2, 8), "float32")],
                         axis=1, epsilon=1e-5, stash_type=1)
    assert CudaRmsNorm().unsupported(runtime_scale) is None
    per_row_scale = spec("RMSNormalization", [((2, 8), "float32"), ((2, 8), "float32")], [((2, 8), "float32")],
                         axis=1, epsilon=1e-5, stash_type=1)
    assert "normalized shape [8]" in (CudaRmsNorm().unsupported(per_row_scale) or "")


def test_reduction_views() -> None:
    assert reduction_view((2, 8, 64), (2,)) == (16, 64, 1)
    assert reduction_view((2, 8, 7, 7), (2, 3)) == (16, 49, 1)
    assert reduction_view((2, 8, 64), (1,)) == (2, 8, 64)
    assert reduction_view((2, 1, 8, 64), (0, 2)) == (1, 16, 64)  # the size-1 axis between does not count
    assert reduction_view((2, 3, 4), (0, 2)) is None
    assert reduction_view((2, 0, 4), (1,)) == (2, 0, 4)
    assert reduction_view((5, 6), (0, 1)) == (1, 30, 1)


def test_every_new_tactic_is_registered_capturable() -> None:
    registry = default_registry()
    expected = {"Expand": "cuda_strided_gather", "Pad": "cuda_strided_gather", "Slice": "cuda_strided_gather",
                "Split": "cuda_strided_gather", "Tile": "cuda_strided_gather", "Gather": "cuda_gather",
                "GatherND": "cuda_gather_nd_const",
                "Where": "cuda_logic_generated", "Equal": "cuda_logic_generated", "Less": "cuda_logic_generated",
                "LessOrEqual": "cuda_logic_generated", "Greater": "cuda_logic_generated",
                "GreaterOrEqual": "cuda_logic_generated", "Not": "cuda_logic_generated",
                "And": "cuda_logic_generated", "Or": "cuda_logic_generated", "Xor": "cuda_logic_generated",
                "IsNaN": "cuda_logic_generated", "IsInf": "cuda_logic_generated", "Cast": "cuda_logic_generated",
                "ReduceMean": "cuda_reduce", "ReduceSum": "cuda_reduce", "ReduceMax": "cuda_reduce",
                "ReduceMin": "cuda_reduce", "RMSNormalization": "cuda_rms_rowwise", "CumSum": "cuda_cumsum",
                "Trilu": "cuda_logic_generated"}
    for op, name in expected.items():
        found = [t for t in registry.candidates(op, "cuda") if t.name == name]
        assert found and found[0].capturable, f"{op} has no capturable {name}"


# --- the generated logic kernel (CPU: its text; nvcc where installed) ------------------------------------------

LOGIC_CASES = [
    spec("Where", [((2, 1, 1, 8), "bool"), ((2, 4, 8, 8), "float16"), ((), "float16")], [((2, 4, 8, 8), "float16")]),
    spec("Where", [((3, 4), "bool"), ((3, 4), "bfloat16"), ((3, 4), "bfloat16")], [((3, 4), "bfloat16")]),
    spec("Where", [((3, 4), "bool"), ((3, 1), "int64"), ((4,), "int64")], [((3, 4), "int64")]),
    spec("Less", [((3, 4), "int64"), ((4,), "int64")], [((3, 4), "bool")]),
    spec("GreaterOrEqual", [((3, 4), "float16"), ((), "float16")], [((3, 4), "bool")]),
    spec("Equal", [((3, 4), "bool"), ((4,), "bool")], [((3, 4), "bool")]),
    spec("IsInf", [((3, 4), "float32")], [((3, 4), "bool")], detect_positive=1, detect_negative=0),
    spec("IsNaN", [((3, 4), "bfloat16")], [((3, 4), "bool")]),
    spec("Not", [((3, 4), "bool")], [((3, 4), "bool")]),
    spec("Or", [((3, 4), "bool"), ((3, 1), "bool")], [((3, 4), "bool")]),
    spec("Cast", [((3, 4), "float32")], [((3, 4), "int64")], to="int64", saturate=1, round_mode="up"),
    spec("Cast", [((3, 4), "bool")], [((3, 4), "float16")], to="float16", saturate=1, round_mode="up"),
    spec("Cast", [((3, 4), "int64")], [((3, 4), "float32")], to="float32", saturate=1, round_mode="up"),
    spec("Cast", [((3, 4), "float16")], [((3, 4), "bfloat16")], to="bfloat16", saturate=1, round_mode="up"),
    spec("Cast", [((3, 4), "int64")], [((3, 4), "bfloat16")], to="bfloat16", saturate=1, round_mode="up"),
    spec("Cast", [((3, 4), "int32")], [((3, 4), "float16")], to="float16", saturate=1, round_mode="up"),
    spec("Trilu", [((2, 5, 7), "bfloat16")], [((2, 5, 7), "bfloat16")], upper=1, k=1),
    spec("Trilu", [((5, 7), "bool")], [((5, 7), "bool")], upper=0, k=-2),
    spec("Div", [((3, 4), "int32"), ((4,), "int32")], [((3, 4), "int32")]),
    spec("Sub", [((3, 4), "int64"), ((), "int64")], [((3, 4), "int64")]),
    spec("Max", [((3, 4), "int64"), ((3, 1), "int64")], [((3, 4), "int64")]),
]


def test_a_generated_source_is_a_function_of_the_layer() -> None:
    for layer in LOGIC_CASES:
        assert CudaLogic().ineligibility(layer) is None, layer
        assert generate_source(layer) == generate_source(layer)
    where = generate_source(LOGIC_CASES[0])
    assert "out[i] = in0[" in where and "? in1[i] : in2[0]" in where  # bits copied, the scalar read at 0
    assert "float_to_int(a0)" in generate_source(LOGIC_CASES[10])


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_generated_and_package_sources_compile(tmp_path: Path) -> None:
    files = []
    for k, layer in enumerate(LOGIC_CASES):
        path = tmp_path / f"logic_{k}.cu"
        path.write_text(generate_source(layer))
        files.append((path, ()))
    for name in ("index.cu", "reduction.cu", "norm.cu"):
        files += [(KERNELS / name, d) for d in ((), ("-DREPRO_HALF=1",), ("-DREPRO_BF16=1",))]
    for path, defines in files:
        result = subprocess.run(["nvcc", "-arch=sm_80", "-std=c++17", "--cubin", "-I", str(KERNELS), *defines,
                                 "-o", str(tmp_path / "out.cubin"), str(path)], capture_output=True, text=True,
                                check=False)
        assert result.returncode == 0, f"{path.name} {defines}: {result.stderr}"


# --- on the GPU: each tactic against the NumPy reference ------------------------------------------------------

def gpu(fn: Any) -> Any:
    """A test that runs on a GPU host only."""
    return pytest.mark.gpu(pytest.mark.skipif(CUDA_SKIP is not None, reason=f"no CUDA: {CUDA_SKIP}")(fn))


TOLERANCE = {"float16": (1e-2, 1e-3), "bfloat16": (2e-2, 1e-2), "float32": (1e-4, 1e-5)}


def check_on_gpu(tactic: Tactic, layer: LayerSpec, activations: list[np.ndarray]) -> None:
    assert tactic.ineligibility(layer) is None
    cuda = get_backend("cuda")
    with cuda.activate():
        assert isinstance(tactic.prepare(layer, cuda), LaunchPlan)
    got, want = run_tactic(tactic, layer, activations, cuda), reference(layer, activations)
    again = run_tactic(tactic, layer, activations, cuda)
    for g, w, a in zip(got, want, again):
        # run to run, bit for bit (as bytes: a NaN is equal to itself only so, in bfloat16 too)
        np.testing.assert_array_equal(np.ascontiguousarray(g).view(np.uint8), np.ascontiguousarray(a).view(np.uint8))
        if g.dtype.kind in "biu" or tactic.family in ("index", "logic"):
            np.testing.assert_array_equal(g, w)
        else:
            rtol, atol = TOLERANCE[str(g.dtype)]
            np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=rtol, atol=atol)


@gpu
@pytest.mark.parametrize("layer", GATHER_CASES, ids=lambda s: f"{s.op}-{s.inputs[0].dtype}-{list(s.inputs[0].shape)}")
def test_gpu_strided_gather(layer: LayerSpec) -> None:
    rng = np.random.default_rng(7)
    check_on_gpu(CudaStridedGather(), layer, [random(rng, layer.inputs[0].shape, layer.inputs[0].dtype)])


@gpu
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_gpu_where_broadcasts_an_attention_mask(dtype: str) -> None:
    b, h, s = 2, 12, 128
    layer = spec("Where", [((b, 1, 1, s), "bool"), ((b, h, s, s), dtype), ((), dtype)], [((b, h, s, s), dtype)],
                 {2: np.array(-np.inf, dtype=np_dtype(dtype))})
    rng = np.random.default_rng(1)
    check_on_gpu(CudaLogic(), layer, [rng.random((b, 1, 1, s)) < 0.8, random(rng, (b, h, s, s), dtype)])


@gpu
def test_gpu_comparisons_logic_and_casts() -> None:
    rng = np.random.default_rng(2)
    x = random(rng, (4, 64), "float16")
    x[0, :4] = [np.nan, np.inf, -np.inf, -0.0]
    for layer, acts in [
        (spec("Less", [((4, 64), "int64"), ((64,), "int64")], [((4, 64), "bool")]),
         [random(rng, (4, 64), "int64"), random(rng, (64,), "int64")]),
        (spec("Equal", [((4, 64), "float16"), ((4, 64), "float16")], [((4, 64), "bool")]), [x, x]),
        (spec("IsNaN", [((4, 64), "float16")], [((4, 64), "bool")]), [x]),
        (spec("IsInf", [((4, 64), "float16")], [((4, 64), "bool")], detect_positive=1, detect_negative=1), [x]),
        (spec("Not", [((4, 64), "bool")], [((4, 64), "bool")]), [random(rng, (4, 64), "bool")]),
        (spec("And", [((4, 64), "bool"), ((1, 64), "bool")], [((4, 64), "bool")]),
         [random(rng, (4, 64), "bool"), random(rng, (1, 64), "bool")]),
        (spec("Cast", [((4, 64), "bool")], [((4, 64), "float16")], to="float16", saturate=1, round_mode="up"),
         [random(rng, (4, 64), "bool")]),
        (spec("Cast", [((4, 64), "int64")], [((4, 64), "float32")], to="float32", saturate=1, round_mode="up"),
         [rng.integers(-2**40, 2**40, (4, 64))]),
        (spec("Cast", [((4, 64), "float16")], [((4, 64), "int64")], to="int64", saturate=1, round_mode="up"), [x]),
        (spec("Cast", [((4, 64), "float32")], [((4, 64), "bfloat16")], to="bfloat16", saturate=1,
              round_mode="up"), [random(rng, (4, 64), "float32")]),
        (spec("Cast", [((4, 64), "int64")], [((4, 64), "bfloat16")], to="bfloat16", saturate=1, round_mode="up"),
         [rng.integers(-2**62, 2**62, (4, 64))]),
        (spec("Cast", [((4, 64), "int64")], [((4, 64), "float16")], to="float16", saturate=1, round_mode="up"),
         [rng.integers(-70000, 70000, (4, 64))]),
        (spec("Trilu", [((3, 64, 64), "float16")], [((3, 64, 64), "float16")], upper=1, k=0),
         [random(rng, (3, 64, 64), "float16")]),
        (spec("Trilu", [((64, 48), "int64")], [((64, 48), "int64")], upper=0, k=3), [random(rng, (64, 48), "int64")]),
    ]:
        check_on_gpu(CudaLogic(), layer, acts)


@gpu
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_gpu_reductions(dtype: str) -> None:
    rng = np.random.default_rng(3)
    for op, shape, axes, keep in [("ReduceMean", (4, 128, 768), (2,), 1), ("ReduceSum", (2, 300, 64), (1,), 0),
                                  ("ReduceMax", (3, 5, 7, 7), (2, 3), 1), ("ReduceMin", (6, 1000), (0, 1), 0),
                                  ("ReduceMax", (8, 33), (0,), 1)]:
        out = tuple(1 if d in axes else n for d, n in enumerate(shape) if keep or d not in axes)
        layer = spec(op, [(shape, dtype)], [(out, dtype)], axes=axes, keepdims=keep)
        x = random(rng, shape, dtype)
        x.reshape(-1)[5] = np.nan
        check_on_gpu(CudaReduce(), layer, [x])


@gpu
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_gpu_rms_normalization(dtype: str) -> None:
    rng = np.random.default_rng(4)
    scale = random(rng, (1, 4096), dtype)
    layer = spec("RMSNormalization", [((2, 16, 4096), dtype), ((1, 4096), dtype)], [((2, 16, 4096), dtype)],
                 {1: scale}, axis=2, epsilon=1e-6, stash_type=1)
    check_on_gpu(CudaRmsNorm(), layer, [random(rng, (2, 16, 4096), dtype)])
    runtime = spec("RMSNormalization", [((2, 16, 4096), dtype), ((4096,), dtype)], [((2, 16, 4096), dtype)],
                   axis=2, epsilon=1e-6, stash_type=1)
    check_on_gpu(CudaRmsNorm(), runtime, [random(rng, (2, 16, 4096), dtype), random(rng, (4096,), dtype)])


@gpu
@pytest.mark.parametrize("index_dtype", ["int64", "int32"])
def test_gpu_embedding_gather(index_dtype: str) -> None:
    rng = np.random.default_rng(5)
    table = random(rng, (1000, 96), "float16")
    layer = spec("Gather", [((1000, 96), "float16"), ((2, 17), index_dtype)], [((2, 17, 96), "float16")],
                 {0: table}, axis=0)
    ids = rng.integers(-1000, 1000, (2, 17)).astype(index_dtype)
    check_on_gpu(CudaGather(), layer, [ids])
    odd = spec("Gather", [((4, 5, 3), "bool"), ((2,), index_dtype)], [((4, 2, 3), "bool")], axis=1)
    check_on_gpu(CudaGather(), odd, [random(rng, (4, 5, 3), "bool"), np.array([4, -5], dtype=index_dtype)])


@gpu
@pytest.mark.parametrize("dtype", ["float32", "float16", "int64", "int32"])
def test_gpu_cumsum(dtype: str) -> None:
    rng = np.random.default_rng(6)
    for shape, axis, exclusive, reverse in [((2, 128), 1, 0, 0), ((2, 128), 1, 1, 0), ((5, 7, 3), 0, 0, 1),
                                            ((4, 33, 6), 1, 1, 1)]:
        layer = spec("CumSum", [(shape, dtype)], [(shape, dtype)], axis=axis, exclusive=exclusive, reverse=reverse)
        x = random(rng, shape, dtype)
        check_on_gpu(CudaCumSum(), layer, [x])
        if dtype == "float32":  # the same order of additions as NumPy's: the same bits
            np.testing.assert_array_equal(run_tactic(CudaCumSum(), layer, [x], get_backend("cuda"))[0],
                                          reference(layer, [x])[0])


@gpu
@pytest.mark.parametrize("dtype", ["int64", "int32"])
def test_gpu_integer_arithmetic(dtype: str) -> None:
    info = np.iinfo(np_dtype(dtype))
    rng = np.random.default_rng(8)
    a = rng.integers(info.min, info.max, (6, 40), dtype=np_dtype(dtype), endpoint=True)
    b = rng.integers(-9, 9, (40,), dtype=np_dtype(dtype))
    a[0, :4] = [info.min, info.min, info.max, -7]
    b[:4] = [-1, 3, 0, 2]  # the most negative value by -1 and by 3, a zero divisor
    for op in ("Add", "Sub", "Mul", "Div", "Max", "Min"):
        layer = spec(op, [((6, 40), dtype), ((40,), dtype)], [((6, 40), dtype)])
        check_on_gpu(CudaLogic(), layer, [a, b])


@gpu
def test_gpu_gather_nd_of_the_text_mask() -> None:
    rows = np.stack(np.meshgrid(np.arange(2), np.arange(16), indexing="ij"), -1).reshape(2, 1, 1, 16, 2)
    rng = np.random.default_rng(10)
    for dtype in ("bool", "float16", "float32", "int64"):
        layer = spec("GatherND", [((2, 16), dtype), ((2, 1, 1, 16, 2), "int64")], [((2, 1, 1, 16), dtype)],
                     {1: rows}, batch_dims=0)
        check_on_gpu(CudaGatherNDConstant(), layer, [random(rng, (2, 16), dtype)])
    layer = spec("GatherND", [((2, 3, 4), "float32"), ((2, 2, 1), "int64")], [((2, 2, 4), "float32")],
                 {1: np.array([[[1], [-3]], [[2], [0]]])}, batch_dims=1)
    check_on_gpu(CudaGatherNDConstant(), layer, [random(rng, (2, 3, 4), "float32")])


@gpu
@pytest.mark.parametrize("dtype", ["int64", "int32", "bool"])
def test_gpu_exact_reductions(dtype: str) -> None:
    rng = np.random.default_rng(19)
    ops = ("ReduceMax", "ReduceMin") if dtype == "bool" else ("ReduceSum", "ReduceMax", "ReduceMin")
    for op in ops:
        for shape, axes, keep in [((4, 3, 700), (2,), 1), ((2, 30, 5), (1,), 0), ((6, 1000), (0, 1), 0)]:
            out = tuple(1 if d in axes else n for d, n in enumerate(shape) if keep or d not in axes)
            layer = spec(op, [(shape, dtype)], [(out, dtype)], axes=axes, keepdims=keep)
            check_on_gpu(CudaReduce(), layer, [random(rng, shape, dtype)])

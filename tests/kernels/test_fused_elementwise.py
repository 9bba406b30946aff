"""The generated fused elementwise kernel: its source is a deterministic function of the layer, its formulas and
index arithmetic are those of the NumPy reference (the formulas are the table's, which the references compute
through; the index arithmetic is emulated on the CPU), and on a GPU it matches the op's reference compute."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from reprobuild.kernels.formulas import c_expression, helper_definitions
from reprobuild.kernels.fused_elementwise import (
    PRELUDE,
    CudaFusedElementwise,
    generate_source,
    index_code,
    step_expression,
)
from reprobuild.kernels.tactic import LayerSpec, TensorSig
from reprobuild.layers.op_fused_elementwise import BINARY, STEP_OPS, Step, encode_step, parse_program, step_definition
from reprobuild.ops.op_fused_elementwise import FusedElementwise
from reprobuild.registry import default_registry
from tests.helpers import CUDA_SKIP

#: Attributes of each step op that has some (canonical, as the frontend writes them).
ATTRS: Mapping[str, dict[str, Any]] = {
    "Clip": {"max": 1.5, "max_from": "value", "min": -0.25, "min_from": "value"}, "Elu": {"alpha": 0.7},
    "Gelu": {"approximate": "none"}, "HardSigmoid": {"alpha": float(np.float32(0.2)), "beta": 0.5},
    "LeakyRelu": {"alpha": float(np.float32(0.01))},
}
SILU_SUB = ("Sigmoid 0", "Mul 0 s0", "Sub s1 1")
CHAIN = ("Sub 0 1", "Div s0 2", "Tanh s1", "Mul 3 s2", "Sigmoid s3", "Mul s3 s4")


def _variants(op: str) -> list[dict[str, Any]]:
    if op == "Gelu":
        return [{"approximate": "none"}, {"approximate": "tanh"}]
    if op == "Clip":
        return [ATTRS["Clip"], {"max": 0, "max_from": "none", "min": 0.0, "min_from": "value"}]
    return [ATTRS.get(op, {})]


def _one_step(op: str, attrs: Mapping[str, Any]) -> Step:
    return Step(op, tuple(("in", i) for i in range(2 if op in BINARY else 1)), tuple(sorted(attrs.items())))


def _spec(op: str, attrs: Mapping[str, Any], shapes: Sequence[tuple[int, ...]], dtype: str,
          constants: Mapping[int, np.ndarray] | None = None) -> LayerSpec:
    out = np.broadcast_shapes(*shapes)
    return LayerSpec("layer", op, dict(attrs), tuple(TensorSig(tuple(s), dtype) for s in shapes),
                     (TensorSig(tuple(out), dtype),), dict(constants or {}))


# --- the generator, on the CPU ---------------------------------------------------------------------------------


def test_the_source_is_deterministic_and_holds_the_program() -> None:
    program = parse_program(SILU_SUB, 2)
    text = generate_source(program, "float32", (2, 3, 4), [(2, 3, 4), (3, 1)])
    assert text == generate_source(parse_program(SILU_SUB, 2), "float32", (2, 3, 4), [(2, 3, 4), (3, 1)])
    assert text.count('extern "C" __global__ void fused_elementwise(') == 1
    assert text.count("#include") == 1 and '#include "dtype.cuh"' in text  # the one header NVRTC is given
    assert "const float* in0, const float* in1, float* out" in text
    assert "const float a0 = ld(in0[i]);" in text  # the input of the output's layout is read at i
    assert "const float a1 = ld(in1[q1]);" in text  # (3, 1) against (2, 3, 4): one coordinate
    assert "sigmoid(a0)" in text and "__fmul_rn(a0, s0)" in text and "__fsub_rn(s1, a1)" in text
    assert "round_half(" not in text.split("extern")[1]
    assert "const unsigned int total = 24u;" in text
    # another shape, another dtype: another kernel
    assert generate_source(program, "float32", (2, 3, 5), [(2, 3, 5), (3, 1)]) != text
    half = generate_source(program, "float16", (2, 3, 4), [(2, 3, 4), (3, 1)])
    assert "const unsigned short* in0" in half and "st(out + i, s2);" in half
    assert "const float s1 = round_half(__fmul_rn(a0, s0));" in half


def test_large_outputs_index_with_64_bits() -> None:
    text = generate_source(parse_program(("Relu 0",), 1), "float32", (70000, 70000), [(70000, 70000)])
    assert "const unsigned long long total = 4900000000ull;" in text


def _emulated_offsets(out_shape: tuple[int, ...], shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
    """Each input's element offset for every output position, from the C lines ``index_code`` writes."""
    lines, offsets = index_code(out_shape, shapes, "unsigned int")
    python = [re.sub(r"^(const )?unsigned int ", "", line).replace("/=", "//=") for line in lines]
    total = int(np.prod(out_shape, dtype=np.int64))
    found = [np.zeros(total, dtype=np.int64) for _ in shapes]
    for i in range(total):
        scope: dict[str, int] = {"i": i}
        for line in python:
            exec(line, {}, scope)
        for k, expression in enumerate(offsets):
            found[k][i] = eval(expression, {}, scope)
    return found


@pytest.mark.parametrize(("out_shape", "shapes"), [
    ((2, 3, 4, 5), [(2, 3, 4, 5), (3, 1, 5), (1,), (4, 1)]),
    ((2, 1, 3), [(2, 1, 1), (3,), (2, 1, 3)]),
    ((5, 6), [(5, 1), (1, 6), ()]),
    ((), [(), ()]),
])
def test_the_index_arithmetic_broadcasts_as_numpy_does(out_shape: tuple[int, ...],
                                                       shapes: list[tuple[int, ...]]) -> None:
    for shape, offsets in zip(shapes, _emulated_offsets(out_shape, shapes)):
        size = int(np.prod(shape, dtype=np.int64))
        want = np.broadcast_to(np.arange(size).reshape(shape), out_shape).reshape(-1)
        np.testing.assert_array_equal(offsets, want, err_msg=f"{shape} in {out_shape}")


def test_each_step_is_its_formula_from_the_table() -> None:
    """The generator writes each step as the formula table's C (formulas.py, from reprobuild/layers/formulas.py,
    which the references compute through), and its prelude defines the table's helpers."""
    for op in STEP_OPS:
        for attrs in _variants(op):
            step = _one_step(op, attrs)
            args = [f"a{i}" for i in range(len(step.operands))]
            assert step_expression(step, args) == c_expression(op, args, attrs)
    assert helper_definitions() in PRELUDE


def test_the_tactic_takes_programs_and_single_elementwise_layers_and_says_why_not_others() -> None:
    tactic = default_registry().get("FusedElementwise", "cuda_generated", CudaFusedElementwise.version)
    assert isinstance(tactic, CudaFusedElementwise)
    assert tactic in default_registry().candidates("Relu", "cuda") and tactic in default_registry().candidates(
        "Pow", "cuda")
    ok = [_spec("FusedElementwise", {"steps": SILU_SUB}, [(2, 3), (3,)], "float32"),
          _spec("FusedElementwise", {"steps": SILU_SUB}, [(2, 3), (3,)], "float16"),
          _spec("FusedElementwise", {"steps": SILU_SUB}, [(2, 3), (3,)], "bfloat16"),
          _spec("Sub", {}, [(2, 3), (3,)], "float32", {1: np.ones(3, np.float32)}),
          _spec("Clip", ATTRS["Clip"], [(4,)], "float16"), _spec("Max", {}, [(4,), (4,)], "float32")]
    for spec in ok:
        assert tactic.ineligibility(spec) is None, spec
    refused = [
        _spec("FusedElementwise", {"steps": SILU_SUB}, [(2, 3), (3,)], "float64"),
        _spec("Max", {}, [(4,), (4,), (4,)], "float32"),
        _spec("Clip", {"max": 0, "max_from": "input", "min": 0, "min_from": "none"}, [(4,), ()], "float32"),
        _spec("FusedElementwise", {"steps": ("Relu 0", "Relu 0")}, [(4,)], "float32"),  # s0 read by no step
        LayerSpec("pow", "Pow", {}, (TensorSig((4,), "float32"), TensorSig((4,), "float16")),
                  (TensorSig((4,), "float32"),)),
    ]
    for spec in refused:
        assert tactic.ineligibility(spec) is not None, spec


# --- the kernel, on a GPU -----------------------------------------------------------------------------------------


def _inputs(rng: np.random.Generator, shapes: Sequence[tuple[int, ...]], dtype: str, positive: bool = False,
            nan: bool = False) -> list[np.ndarray]:
    xs = []
    for shape in shapes:
        x = rng.standard_normal(shape) * 2.0 + 0.01
        xs.append((np.abs(x) + 0.1 if positive else x).astype(dtype))
    if nan and xs[0].size > 2:
        xs[0].reshape(-1)[:2] = np.nan
    return xs


def _run_on_gpu(spec: LayerSpec, activations: list[np.ndarray]) -> np.ndarray:
    from reprobuild.kernels.backend import get_backend
    from tests.kernels.pin_tactics import run_tactic

    (out,) = run_tactic(CudaFusedElementwise(), spec, activations, get_backend("cuda"))
    return out


@pytest.mark.gpu
@pytest.mark.skipif(CUDA_SKIP is not None, reason=f"no CUDA: {CUDA_SKIP}")
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("op", STEP_OPS)
@pytest.mark.parametrize("fused", [True, False], ids=["program", "plain_layer"])
def test_each_op_matches_the_reference_on_the_gpu(op: str, dtype: str, fused: bool, rng: np.random.Generator) -> None:
    for attrs in _variants(op):
        shapes = [(3, 4, 5), (4, 1)] if op in BINARY else [(3, 4, 5)]
        steps = (encode_step(_one_step(op, attrs)),)
        spec = _spec("FusedElementwise", {"steps": steps}, shapes, dtype) if fused else _spec(op, attrs, shapes, dtype)
        xs = _inputs(rng, shapes, dtype, positive=op in ("Log", "Sqrt", "Pow"), nan=True)
        got = _run_on_gpu(spec, xs)
        want = step_definition(op).compute(np, attrs, *xs)[0]
        rtol, atol = (1e-5, 1e-6) if dtype == "float32" else (2e-3, 2e-3)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{op} {attrs}: NaN positions")
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol,
                                   equal_nan=True, err_msg=f"{op} {attrs} {dtype}")


@pytest.mark.gpu
@pytest.mark.skipif(CUDA_SKIP is not None, reason=f"no CUDA: {CUDA_SKIP}")
def test_a_broadcasting_chain_with_constants_matches_float64_on_the_gpu(rng: np.random.Generator) -> None:
    shapes = [(2, 4, 6, 5), (6, 1), (4, 1, 1), (5,)]
    xs = _inputs(rng, shapes, "float32")
    spec = _spec("FusedElementwise", {"steps": CHAIN}, shapes, "float32", {1: xs[1], 3: xs[3]})
    got = _run_on_gpu(spec, [xs[0], xs[2]])
    want = FusedElementwise().compute(np, {"steps": CHAIN}, *(x.astype(np.float64) for x in xs))[0]
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(CUDA_SKIP is not None, reason=f"no CUDA: {CUDA_SKIP}")
def test_a_float16_chain_matches_the_float16_reference_on_the_gpu(rng: np.random.Generator) -> None:
    shapes = [(2, 4, 6, 5), (6, 1), (4, 1, 1), (5,)]
    xs = _inputs(rng, shapes, "float16")
    got = _run_on_gpu(_spec("FusedElementwise", {"steps": CHAIN}, shapes, "float16"), xs)
    want = FusedElementwise().compute(np, {"steps": CHAIN}, *xs)[0]
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=5e-3, atol=5e-3)


@pytest.mark.gpu
@pytest.mark.skipif(CUDA_SKIP is not None, reason=f"no CUDA: {CUDA_SKIP}")
def test_the_tactic_returns_a_launch_plan_and_repeats_bitwise(rng: np.random.Generator) -> None:
    from reprobuild.kernels.backend import get_backend
    from reprobuild.kernels.launch import KernelLaunch, LaunchPlan

    shapes = [(4100, 4100), (4100,)]  # more elements than one grid covers: threads loop
    xs = _inputs(rng, shapes, "float32")
    spec = _spec("FusedElementwise", {"steps": SILU_SUB}, shapes, "float32", {1: xs[1]})
    with get_backend("cuda").activate():
        prepared = CudaFusedElementwise().prepare(spec, get_backend("cuda"))
    assert isinstance(prepared, LaunchPlan) and len(prepared.launches) == 1
    (launch,) = prepared.launches
    assert isinstance(launch, KernelLaunch) and launch.kernel.startswith("generated:fused_elementwise_")
    assert launch.grid == (65536, 1, 1) and launch.block == (256, 1, 1) and len(prepared.holds) == 1
    first, again = _run_on_gpu(spec, [xs[0]]), _run_on_gpu(spec, [xs[0]])
    assert first.tobytes() == again.tobytes()
    want = FusedElementwise().compute(np, {"steps": SILU_SUB}, *(x.astype(np.float64) for x in xs))[0]
    np.testing.assert_allclose(first.astype(np.float64), want, rtol=1e-5, atol=1e-6)

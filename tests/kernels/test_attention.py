"""The flash-attention tactics (kernels/attention.py): the host-side geometry and eligibility on every machine; on a
GPU, every form the fuse_attention pass makes against a float64 NumPy reference, bitwise run-to-run, and batch
invariance (a sequence's bits do not depend on its batch mates)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from reprobuild.core.dtypes import np_dtype
from reprobuild.kernels.attention import (
    TACTICS,
    AttentionGeometry,
    CudaCublasAttention,
    CudaFlashAttentionD64,
    broadcast_strides,
    gemm_groups,
    k_layout,
    scale_factor,
)
from reprobuild.kernels.tactic import LayerSpec, TensorSig
from reprobuild.layers.registry import find_layer
from tests.helpers import CUDA_SKIP

FORM = {"k_transposed": 0, "scale_on": "scores", "scale_op": "Div", "scale": 8.0, "masks": (), "fill": 0.0,
        "guard": "none", "guard_fill": 0.0, "softcap": 0.0, "softcap_in": 0.0, "softcap_op": ""}


def spec(q: tuple[int, ...], k: tuple[int, ...], v: tuple[int, ...], mask_inputs: list[tuple[tuple[int, ...], str]],
         dtype: str = "float16", constants: dict[int, np.ndarray] | None = None, **attrs: Any) -> LayerSpec:
    """A FusedAttention layer: Q, K, V, then the masks (shape, dtype) in input order."""
    form = {**FORM, **attrs}
    lead = np.broadcast_shapes(q[:-2], k[:-2], v[:-2])
    out = (*lead, q[-2], v[-1])
    inputs = [TensorSig(q, dtype), TensorSig(k, dtype), TensorSig(v, dtype)]
    inputs += [TensorSig(shape, mdtype) for shape, mdtype in mask_inputs]
    return LayerSpec("attention", "FusedAttention", form, tuple(inputs), (TensorSig(out, dtype),), constants or {})


def reference(layer: LayerSpec, values: list[np.ndarray]) -> np.ndarray:
    """The layer's math in float64, written from the definition (not the layer's own reference)."""
    a = layer.attrs
    q, k, v = (x.astype(np.float64) for x in values[:3])
    kk = k if a["k_transposed"] else np.swapaxes(k, -1, -2)
    s = (q @ kk) * scale_factor(layer)
    if a["softcap_op"] == "Div":
        s = a["softcap"] * np.tanh(s / a["softcap_in"])
    elif a["softcap_op"] == "Mul":
        s = a["softcap"] * np.tanh(s * a["softcap_in"])
    steps = list(a["masks"])
    adds = iter(values[3:3 + steps.count("add")])
    conds = iter(values[3 + steps.count("add"):3 + len(steps)])
    dtype = np_dtype(layer.inputs[0].dtype)
    with np.errstate(over="ignore"):
        fill = float(np.float64(a["fill"]).astype(dtype))
    for step in steps:
        if step == "add":
            s = s + next(adds).astype(np.float64)
        elif step == "where":
            s = np.where(next(conds), s, fill)
        else:
            s = np.where(next(conds), fill, s)
    with np.errstate(invalid="ignore"):
        e = np.exp(s - s.max(axis=-1, keepdims=True))
        p = e / e.sum(axis=-1, keepdims=True)
    if a["guard"] == "nan":
        p = np.where(np.isnan(p), float(a["guard_fill"]), p)
    elif a["guard"] != "none":
        cond, g = values[-1], float(a["guard_fill"])
        p = np.where(cond, p, g) if a["guard"] == "where" else np.where(cond, g, p)
    return p @ v.astype(np.float64)


def test_broadcast_strides_read_like_numpy() -> None:
    for shape, target in (((2, 1, 1, 9), (2, 4, 7, 9)), ((7, 9), (3, 4, 7, 9)), ((1, 4, 7, 9), (3, 4, 7, 9)),
                          ((1,), (5, 3))):
        got = broadcast_strides(shape, target)
        want = tuple(s // 8 for s in np.broadcast_to(np.zeros(shape), target).strides)
        assert got == want, (shape, target)


def test_geometry_of_a_bert_layer() -> None:
    layer = spec((2, 12, 128, 64), (2, 12, 128, 64), (2, 12, 128, 64), [((2, 1, 1, 128), "float16"),
                                                                       ((1, 1, 128, 128), "bool")],
                 masks=("where", "add"))
    g = AttentionGeometry.of(layer)
    assert (g.lead, g.sq, g.sk, g.d, g.dv) == ((2, 12), 128, 128, 64, 64)
    assert g.strides == ((12 * 128 * 64, 128 * 64),) * 3
    # the steps in the layer's order: the Where (its condition is the input after the additive masks), then the Add
    assert g.masks == ((2, 4, (0, 0, 128, 1)), (1, 3, (128, 0, 0, 1)))


def test_geometry_of_rank_3_and_transposed_k() -> None:
    layer = spec((6, 33, 32), (6, 32, 130), (6, 130, 32), [], k_transposed=1)
    g = AttentionGeometry.of(layer)
    assert (g.lead, g.sq, g.sk, g.d) == ((1, 6), 33, 130, 32)
    assert g.strides == ((0, 33 * 32), (0, 32 * 130), (0, 130 * 32))


def test_a_transposed_k_is_copied_in_rows_when_its_keys_fill_16_bytes() -> None:
    for sk, want in ((136, 2), (130, 1)):
        layer = spec((1, 2, 8, 64), (1, 2, 64, sk), (1, 2, sk, 64), [], k_transposed=1)
        assert k_layout(layer, AttentionGeometry.of(layer)) == want
    plain = spec((1, 2, 8, 64), (1, 2, 136, 64), (1, 2, 136, 64), [])
    assert k_layout(plain, AttentionGeometry.of(plain)) == 0


def test_scale_factor_of_each_form() -> None:
    for on, op, want in (("scores", "Div", 1 / 8), ("scores", "Mul", 8.0), ("q", "Div", 1 / 8),
                         ("qk", "Mul", 64.0), ("qk", "Div", 1 / 64), ("none", "", 1.0)):
        layer = spec((1, 4, 8), (1, 4, 8), (1, 4, 8), [], scale_on=on, scale_op=op)
        assert scale_factor(layer) == pytest.approx(want)


@pytest.mark.parametrize(("layer", "reason"), [
    (spec((1, 2, 8, 64), (1, 2, 8, 64), (1, 2, 8, 64), [], dtype="float32"), "dtype float32"),
    (spec((1, 2, 8, 32), (1, 2, 8, 32), (1, 2, 8, 32), []), "head dims 32"),
    (spec((1, 2, 8, 64), (1, 2, 8, 64), (1, 2, 8, 32), []), "32 (V)"),
    (spec((1, 2, 8, 64), (1, 2, 8, 64), (1, 2, 8, 64), [((1, 2, 8, 8), "bool")], guard="where_not"), "guard"),
    (spec((1, 2, 8, 64), (1, 2, 8, 64), (1, 2, 8, 64), [], guard="nan", guard_fill=1.0), "fill 1.0"),
    (spec((1, 2, 8, 64), (1, 2, 8, 64), (1, 2, 8, 64), [((1, 1, 8, 8), "float16")] * 4,
          masks=("add",) * 4), "4 mask steps"),
    (spec((1, 1, 2, 8, 64), (1, 1, 2, 8, 64), (1, 1, 2, 8, 64), []), "rank 5"),
    (spec((1, 2, 8, 64), (1, 2, 8, 64), (1, 2, 8, 64), [], constants={2: np.zeros((1, 2, 8, 64), np.float16)}),
     "constant"),
])
def test_unsupported_forms_say_why(layer: LayerSpec, reason: str) -> None:
    got = CudaFlashAttentionD64().ineligibility(layer)
    assert got is not None and reason in got, got


def test_one_flash_tactic_per_head_dim() -> None:
    flash = [t for t in TACTICS if t.name.startswith("cuda_flash")]
    assert sorted(t.parameters["head_dim"] for t in flash) == [32, 64, 128]
    assert all(t.capturable and t.min_compute_capability == 80 for t in flash)


def test_the_cublas_tactic_takes_what_the_flash_kernel_leaves() -> None:
    cublas = CudaCublasAttention()
    guarded = spec((1, 2, 8, 80), (1, 2, 8, 80), (1, 2, 8, 80), [((1, 2, 8, 8), "bool")], dtype="float32",
                   guard="where_not")
    assert cublas.capturable and cublas.ineligibility(guarded) is None
    assert cublas.workspace_bytes(guarded) == 512  # 2 heads x 8 x 8 float32 scores
    # K and V shared across heads but not across the batch: one strided batch of heads per batch element
    shared = AttentionGeometry.of(spec((2, 3, 8, 64), (2, 1, 8, 64), (2, 1, 8, 64), []))
    assert gemm_groups(shared) == [((0, 0, 0, 0), 3, (512, 0, 0)), ((1536, 512, 512, 3), 3, (512, 0, 0))]
    assert gemm_groups(AttentionGeometry.of(spec((2, 3, 8, 64), (2, 3, 8, 64), (1, 1, 8, 64), []))) == [
        ((0, 0, 0, 0), 6, (512, 512, 0))]
    reason = cublas.ineligibility(spec((100, 3, 8, 64), (100, 1, 8, 64), (100, 1, 8, 64), []))
    assert reason is not None and "at most 64" in reason


# ---- on the GPU ----------------------------------------------------------------------------------------------

#: (rtol, atol) against float64, by tactic kind and dtype: the flash kernel keeps the scores in float32; the
#: cuBLAS tactic rounds them to the element type at each step, as the unfused layers do.
TOLERANCE = {("flash", "float16"): (1e-2, 3e-3), ("flash", "bfloat16"): (4e-2, 2e-2),
             ("cublas", "float32"): (1e-4, 1e-5), ("cublas", "float16"): (3e-2, 1e-2),
             ("cublas", "bfloat16"): (1e-1, 5e-2)}


def _tactic(kind: str, head_dim: int) -> Any:
    if kind == "cublas":
        return CudaCublasAttention()
    return next(t for t in TACTICS if t.parameters.get("head_dim") == head_dim)


def _values(layer: LayerSpec, rng: np.random.Generator) -> list[np.ndarray]:
    out = []
    for i, sig in enumerate(layer.inputs):
        if sig.dtype == "bool":
            out.append(rng.random(sig.shape) < 0.8)
        elif i >= 3:
            out.append(np.where(rng.random(sig.shape) < 0.2, -10000.0, rng.standard_normal(sig.shape))
                       .astype(np_dtype(sig.dtype)))
        else:
            out.append(rng.standard_normal(sig.shape).astype(np_dtype(sig.dtype)))
    return out


def _run(layer: LayerSpec, values: list[np.ndarray], kind: str = "flash") -> np.ndarray:
    from reprobuild.kernels.backend import get_backend
    from tests.kernels.pin_tactics import run_tactic

    tactic = _tactic(kind, layer.inputs[0].shape[-1])
    assert tactic.ineligibility(layer) is None, tactic.ineligibility(layer)
    activations = [x for i, x in enumerate(values) if i not in layer.constants]
    (out,) = run_tactic(tactic, layer, activations, get_backend("cuda"))
    return out


def _forms(d: int, dtype: str) -> list[tuple[str, LayerSpec]]:
    b, h = 2, 3
    return [
        ("bert", spec((b, h, 77, d), (b, h, 77, d), (b, h, 77, d), [((b, 1, 1, 77), dtype)], dtype,
                      masks=("add",), scale=float(np.sqrt(d)))),
        ("gpt2_causal_kt", spec((b, h, 72, d), (b, h, d, 136), (b, h, 136, d),
                                [((b, 1, 1, 136), dtype), ((1, 1, 72, 136), "bool")], dtype,
                                masks=("where", "add"), k_transposed=1, fill=-3.4028234663852886e38)),
        ("swin_q_scaled", spec((4, h, 49, d), (4, h, 49, d), (4, h, 49, d),
                               [((1, h, 49, 49), dtype), ((4, 1, 49, 49), dtype)], dtype,
                               masks=("add", "add"), scale_on="q", scale_op="Mul", scale=d ** -0.5)),
        ("sdpa_qk_softcap", spec((b, h, 40, d), (b, h, 40, d), (b, h, 40, d), [((b, h, 40, 40), "bool")], dtype,
                                 masks=("where_not",), scale_on="qk", scale_op="Mul", scale=d ** -0.25,
                                 fill=-1e4, softcap=5.0, softcap_in=5.0, softcap_op="Div")),
        ("rank3_cross", spec((6, 33, d), (6, 130, d), (6, 130, d), [], dtype, scale_on="none", scale_op="")),
        ("sdpa_nan_guard", spec((b, h, 30, d), (b, h, d, 30), (b, h, 30, d), [((b, 1, 30, 30), "bool")], dtype,
                                masks=("where",), k_transposed=1, scale_on="qk", scale_op="Mul", scale=d ** -0.25,
                                fill=float("-inf"), guard="nan")),
        ("shared_kv_heads", spec((b, h, 65, d), (b, 1, 65, d), (b, 1, 65, d), [], dtype, scale_op="Mul",
                                 scale=d ** -0.5)),
    ]


@pytest.mark.gpu
@pytest.mark.skipif(CUDA_SKIP is not None, reason=f"no CUDA: {CUDA_SKIP}")
@pytest.mark.parametrize(("kind", "dtype", "d"), [
    *[("flash", dtype, d) for dtype in ("float16", "bfloat16") for d in (32, 64, 128)],
    ("cublas", "float32", 64), ("cublas", "float32", 80), ("cublas", "float16", 64), ("cublas", "bfloat16", 32)])
def test_attention_tactics_against_float64(kind: str, dtype: str, d: int) -> None:
    rng = np.random.default_rng([d, len(dtype), len(kind)])
    rtol, atol = TOLERANCE[kind, dtype]
    forms = _forms(d, dtype)
    if kind == "cublas":  # the form only this tactic runs: ONNX Attention's guard after the Softmax
        forms.append(("guarded", spec((2, 3, 20, d), (2, 3, 20, d), (2, 3, 20, d),
                                      [((2, 1, 20, 20), "bool"), ((2, 1, 20, 20), "bool")], dtype,
                                      masks=("where",), fill=-1e4, guard="where_not", guard_fill=0.0)))
    problems = []
    for name, layer in forms:
        values = _values(layer, rng)
        if name == "sdpa_nan_guard":  # rows masked everywhere: NaN probabilities, zeroed by the guard
            values[3][0, 0, 3, :] = False
            values[3][1, 0, 29, :] = False
        got, want = _run(layer, values, kind).astype(np.float64), reference(layer, values)
        assert got.shape == want.shape
        ok = np.isclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
        if kind == "cublas":  # it rounds each step to the element type, as the unfused layers do: no worse than them
            (unfused,) = find_layer("FusedAttention").compute(np, dict(layer.attrs), *values)
            ok |= np.abs(got - want) <= 2 * np.abs(unfused.astype(np.float64) - want) + atol
        if not ok.all():
            problems.append(f"{name}: {int((~ok).sum())} of {got.size} outside, max abs "
                            f"{float(np.nanmax(np.abs(got - want))):.3g}")
        if _run(layer, values, kind).tobytes() != _run(layer, values, kind).tobytes():
            problems.append(f"{name}: two runs differ")
    assert not problems, problems


@pytest.mark.gpu
@pytest.mark.skipif(CUDA_SKIP is not None, reason=f"no CUDA: {CUDA_SKIP}")
def test_a_fully_masked_row_is_nan_as_the_unfused_softmax_makes_it() -> None:
    layer = spec((1, 2, 9, 64), (1, 2, 9, 64), (1, 2, 9, 64), [((1, 1, 9, 9), "bool")], masks=("where",),
                 fill=float("-inf"))
    rng = np.random.default_rng(3)
    values = _values(layer, rng)
    values[3][0, 0, 4, :] = False  # row 4 masked everywhere
    values[3][0, 0, 5, :] = True
    got = _run(layer, values)
    assert np.isnan(got[:, :, 4]).all() and not np.isnan(np.delete(got, 4, axis=2)).any()
    np.testing.assert_allclose(got.astype(np.float64), reference(layer, values), rtol=1e-2, atol=3e-3)


@pytest.mark.gpu
@pytest.mark.skipif(CUDA_SKIP is not None, reason=f"no CUDA: {CUDA_SKIP}")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_a_sequence_has_the_same_bits_whatever_its_batch(dtype: str) -> None:
    rng = np.random.default_rng(7)
    big = spec((5, 4, 100, 64), (5, 4, 100, 64), (5, 4, 100, 64), [((5, 1, 1, 100), dtype)], dtype, masks=("add",))
    values = _values(big, rng)
    together = _run(big, values)
    for i in (0, 3):
        one = spec((1, 4, 100, 64), (1, 4, 100, 64), (1, 4, 100, 64), [((1, 1, 1, 100), dtype)], dtype,
                   masks=("add",))
        alone = _run(one, [x[i:i + 1] for x in values])
        assert alone.tobytes() == together[i:i + 1].tobytes(), f"sequence {i}"

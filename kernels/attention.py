"""Attention tactics: FusedAttention (the ``fuse_attention`` pass's layer) on CUDA (``attention.cu``), as one
flash-attention kernel (float16, bfloat16), as two cuBLAS products around one softmax kernel (every float type,
every form), or as cuDNN's fused SDPA (float16, bfloat16; the forms it computes exactly).

One tactic per head dimension (32, 64, 128), float16 and bfloat16: tensor cores (mma.sync m16n8k16, float32
accumulation), the online softmax in float32, the keys walked in a fixed order with no split over them, so the
bits are the same on every run and a sequence's bits do not depend on its batch mates. The kernel applies the
layer's form itself: the scale (wherever the exporter put it, as one float32 factor on the scores), the softcap,
and each mask step in the layer's order (additive masks and Where conditions, broadcast through strides, constant
or run-time). Forms outside it (a guard after the Softmax, more than three mask steps, attention of rank above 4)
keep the reference tactic, and ``unsupported`` says why.

The cuBLAS tactic computes the scores into the workspace with one strided-batched GEMM, transforms and normalizes
each row in place with one block per row (reduce.cuh's fixed trees; each step rounded to the element type as the
unfused layers store it), and multiplies by V with a second GEMM: the unfused graph's steps in three launches,
for float32 layers and for the forms the flash kernel leaves (a guard, any head dim, uneven broadcasting aside).

The cuDNN tactic (``cuda_cudnn_sdpa``, the ``cudnn`` tactic source, ``cudnn_sdpa.py``) runs the forms cuDNN's fused
SDPA computes exactly (rank-4 Q, K, V with K and V heads dividing Q's, head dims multiples of 8 up to 128, one
additive mask as cuDNN's bias or an exact top-left causal mask, no softcap, no guard) with an engine configuration
chosen per layer among the heuristics' and recorded by value.

The flash kernel's numerics differ from the unfused graph's in the last bits, as any fused attention's do: the
scores stay in float32 between the steps (the unfused layers round each step to the element type), and the
probabilities are rounded once, to the element type, for the second product.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np

from reprobuild.core.dtypes import np_dtype
from reprobuild.kernels import cudnn_sdpa
from reprobuild.kernels.backend import Backend, CudaBackend
from reprobuild.kernels.cuda_launch import BLOCK, cdiv, f32, i32, i64, kernel_launch, operand_refs, per_row, plan
from reprobuild.kernels.launch import MAX_GRID_YZ, CudnnSdpaLaunch, GemmLaunch, LibraryLaunchPlan, Out, Ws
from reprobuild.kernels.nvrtc import integer_defines
from reprobuild.kernels.tactic import Kernel, LayerSpec, Tactic, aligned, require_recorded
from reprobuild.layers.op_fused_attention import INPUT_GUARDS

#: attention.cu's compile-time sizes: query rows per block, the most mask steps, keys per tile by head dim.
_SIZES = integer_defines("attention.cu")
BLOCK_M, MAX_MASKS = _SIZES["BM"], _SIZES["MAX_MASKS"]
if _SIZES["THREADS"] != BLOCK:
    raise ImportError(f"attention.cu's THREADS ({_SIZES['THREADS']}) must be cuda_launch.BLOCK ({BLOCK}): "
                      "attention_softmax_rows's trees are sized by it and launched with BLOCK threads")
#: attention.cu's mask step kinds, and its guard kinds (the same Where forms, and "nan": Where(IsNaN(P), fill, P)).
MASK_KINDS = {"add": 1, "where": 2, "where_not": 3}
GUARD_KINDS = {"where": 2, "where_not": 3, "nan": 4}
#: attention.cu's softcap modes: how the scores reach the Tanh.
CAP_MODES = {"": 0, "Div": 1, "Mul": 2}


def _leading(shape: Sequence[int], rank: int) -> tuple[int, ...]:
    """``shape``'s dims before its last two, left-padded with 1 to ``rank - 2`` dims."""
    lead = tuple(shape[:-2])
    return (1,) * (rank - 2 - len(lead)) + lead


def _strides(shape: Sequence[int]) -> list[int]:
    """Contiguous element strides of ``shape``."""
    out, step = [], 1
    for n in reversed(shape):
        out.append(step)
        step *= int(n)
    return out[::-1]


def broadcast_strides(shape: Sequence[int], target: Sequence[int]) -> tuple[int, ...]:
    """Element strides that read a contiguous array of ``shape`` as if broadcast to ``target`` (NumPy's rules:
    aligned on the right, 0 along a dimension of size 1 that the target widens)."""
    pad = (1,) * (len(target) - len(shape)) + tuple(shape)
    return tuple(0 if n == 1 and t != 1 else s for n, t, s in zip(pad, target, _strides(pad)))


@dataclass(frozen=True)
class AttentionGeometry:
    """The layer as the kernel sees it: two leading dims (L0, L1), Sq, Sk, the head dim, each operand's strides
    over the leading dims, and the mask steps as (kind, input position, (s0, s1, s_q, s_k))."""

    lead: tuple[int, int]
    sq: int
    sk: int
    d: int
    dv: int
    strides: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
    masks: tuple[tuple[int, int, tuple[int, int, int, int]], ...]

    @classmethod
    def of(cls, layer: LayerSpec) -> AttentionGeometry:
        q, k, v = (tuple(t.shape) for t in layer.inputs[:3])
        kt = int(layer.attr("k_transposed"))
        out = tuple(layer.outputs[0].shape)
        rank = len(out)
        lead = _leading(out, rank)
        sq, sk, d, dv = q[-2], (k[-1] if kt else k[-2]), q[-1], v[-1]
        operand = []
        for shape in (q, k, v):
            s = broadcast_strides(shape[:-2], lead) if rank > 2 else ()
            inner = int(np.prod(shape[-2:], dtype=np.int64))
            operand.append(tuple(x * inner for x in s))
        scores = (*lead, sq, sk)
        steps = list(layer.attr("masks"))
        adds = [3 + i for i in range(steps.count("add"))]
        conditions = [3 + len(adds) + i for i in range(len(steps) - len(adds))]
        masks = []
        for step in steps:
            position = adds.pop(0) if step == "add" else conditions.pop(0)
            masks.append((MASK_KINDS[step], position, broadcast_strides(layer.inputs[position].shape, scores)))
        pad2 = (1, 1, *lead)[-2:]
        return cls(
            lead=(int(pad2[0]), int(pad2[1])), sq=int(sq), sk=int(sk), d=int(d), dv=int(dv),
            strides=tuple(_two(s) for s in operand),  # type: ignore[arg-type]
            masks=tuple((kind, pos, _four(s)) for kind, pos, s in masks))


def _two(strides: Sequence[int]) -> tuple[int, int]:
    padded = (0, 0, *strides)[-2:]
    return int(padded[0]), int(padded[1])


def _four(strides: Sequence[int]) -> tuple[int, int, int, int]:
    padded = (0, 0, 0, 0, *strides)[-4:]
    return int(padded[0]), int(padded[1]), int(padded[2]), int(padded[3])


def k_layout(layer: LayerSpec, g: AttentionGeometry) -> int:
    """attention.cu's ``kt``: 0 for K as [Sk, D]; for K as [D, Sk], 2 when Sk is a multiple of 8 (its tiles copy as
    16-byte rows), else 1 (element by element)."""
    if not layer.attr("k_transposed"):
        return 0
    return 2 if g.sk % 8 == 0 else 1


def scale_factor(layer: LayerSpec) -> float:
    """The one float32 factor the kernel multiplies the scores by, however the exporter applied the scale (on the
    scores, on Q, or on Q and K each; by Mul or by Div)."""
    on, op, scale = layer.attr("scale_on"), layer.attr("scale_op"), float(layer.attr("scale"))
    if on == "none":
        return 1.0
    factor = scale if op == "Mul" else 1.0 / scale
    return factor * factor if on == "qk" else factor


class _CudaFlashAttention(Tactic):
    """FusedAttention as flash attention (attention.cu) for one head dimension ``HEAD_DIM``."""

    family, ops, backend, source = "attention", ("FusedAttention",), "cuda", "nvrtc"
    #: float16/bfloat16 Q, K, V and additive masks; bool Where conditions.
    dtypes = ("float16", "bfloat16", "bool")
    capturable = True
    per_dtype_build = True
    min_compute_capability = 80
    needs_activation = False  # checked per operand in ``unsupported``
    HEAD_DIM: ClassVar[int] = 0

    version = 3  # 2: the "nan" guard (FusedAttention v4); 3: a transposed K whose Sk is a multiple of 8 is copied
    # in 16-byte rows (cp.async) and read with ldmatrix.trans (the same products, in the same order)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.parameters = MappingProxyType({"head_dim": cls.HEAD_DIM, "block_m": BLOCK_M,
                                           "block_n": _SIZES[f"BN_D{cls.HEAD_DIM}"], "warps": 4,
                                           "instruction": "mma.sync.m16n8k16"})
        cls.cuda_kernels = MappingProxyType({"attention.cu": (f"flash_fwd_d{cls.HEAD_DIM}",)})

    def unsupported(self, layer: LayerSpec) -> str | None:
        dtype = layer.inputs[0].dtype
        if dtype not in ("float16", "bfloat16"):
            return f"Q is {dtype}; the flash kernel runs float16 and bfloat16 (tensor cores)"
        if any(i in layer.constants for i in range(3)):
            return "Q, K or V is a constant; the flash kernel reads all three as run-time activations"
        guard, guard_fill = layer.attr("guard"), float(layer.attr("guard_fill"))
        if guard in INPUT_GUARDS or (guard == "nan" and guard_fill != 0.0):
            return (f"a {guard!r} guard after the Softmax (fill {guard_fill}); the flash kernel never materializes "
                    "the probabilities, so it runs only the guard that zeroes a row whose probabilities are all NaN")
        steps = list(layer.attr("masks"))
        if len(steps) > MAX_MASKS:
            return f"{len(steps)} mask steps; the flash kernel applies at most {MAX_MASKS}"
        rank = len(layer.outputs[0].shape)
        if rank > 4 or any(len(t.shape) > rank for t in layer.inputs):
            return f"attention of rank {rank}; the flash kernel takes at most two leading dims ([B, H, S, D])"
        g = AttentionGeometry.of(layer)
        if g.d != self.HEAD_DIM or g.dv != self.HEAD_DIM:
            return (f"head dims {g.d} (Q, K) and {g.dv} (V); this tactic runs {self.HEAD_DIM} for both "
                    "(the cuda_flash_d32/d64/d128 tactics cover those head dims)")
        if g.lead[0] > MAX_GRID_YZ or g.lead[1] > MAX_GRID_YZ:
            return f"leading dims {list(g.lead)}; a grid dimension holds at most {MAX_GRID_YZ}"
        if max(g.sq, g.sk) * g.d >= 2**31:
            return "a sequence of more than 2^31 elements; the kernel indexes rows with 32-bit ints"
        return None

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        if not isinstance(backend, CudaBackend):
            raise TypeError(f"{self.label} needs the cuda backend, not {backend.name}")
        g = AttentionGeometry.of(layer)
        consts = {i: backend.asarray(v) for i, v in layer.constants.items()}
        refs = operand_refs(layer, consts)
        table_d, pointers = mask_table(backend, g, layer, refs)
        cap_mode = CAP_MODES[layer.attr("softcap_op")]
        dtype = self.kernel_dtype(layer)
        fill = element_fill(layer, "fill", dtype)
        (qs, ks, vs) = g.strides
        grid = (cdiv(g.sq, BLOCK_M), g.lead[1], g.lead[0])
        launch = kernel_launch(backend, "attention.cu", f"flash_fwd_d{self.HEAD_DIM}", grid, (128, 1, 1), (
            refs[0], refs[1], refs[2], Out(0), i32(g.sq), i32(g.sk), i32(k_layout(layer, g)),
            i64(qs[0]), i64(qs[1]), i64(ks[0]), i64(ks[1]), i64(vs[0]), i64(vs[1]),
            f32(scale_factor(layer)), i32(cap_mode),
            f32(layer.attr("softcap_in") if cap_mode else 1.0), f32(layer.attr("softcap") if cap_mode else 1.0),
            i32(len(g.masks)), table_d, *pointers, f32(fill), i32(layer.attr("guard") == "nan")), dtype=dtype)
        return plan(backend, launch, holds=(table_d, *consts.values()))


def mask_table(backend: Backend, g: AttentionGeometry, layer: LayerSpec,
               refs: Sequence[Any]) -> tuple[Any, list[Any]]:
    """attention.cu's mask table on the device (a row (kind, s0, s1, s_q, s_k) per mask step, then the guard's) and
    the mask operands' pointers in step order (0 for the steps the layer lacks)."""
    table = np.zeros((MAX_MASKS + 1, 5), dtype=np.int64)
    pointers: list[Any] = [np.uint64(0)] * MAX_MASKS
    for i, (kind, position, strides) in enumerate(g.masks):
        table[i] = (kind, *strides)
        pointers[i] = refs[position]
    guard = layer.attr("guard")
    if guard in INPUT_GUARDS:
        scores = (*layer.outputs[0].shape[:-2], g.sq, g.sk)
        table[MAX_MASKS] = (GUARD_KINDS[guard], *_four(broadcast_strides(layer.inputs[-1].shape, scores)))
    elif guard != "none":
        table[MAX_MASKS, 0] = GUARD_KINDS[guard]
    return backend.asarray(table), pointers


#: The most GEMM pairs the cuBLAS tactic launches for Q, K and V that broadcast unevenly over the leading dims.
MAX_GEMM_GROUPS = 64


def gemm_groups(g: AttentionGeometry) -> list[tuple[tuple[int, int, int, int], int, tuple[int, int, int]]]:
    """The strided batches that cover the (L0, L1) products: (first element offsets of Q, K, V and the batch
    index of S and out, products in the batch, Q/K/V element strides between products). One batch of L0 * L1
    when every operand steps evenly over both leading dims (including not at all); else one batch of L1 per b0
    (K and V shared across heads but not across the batch, say)."""
    (l0, l1), strides = g.lead, g.strides
    even = all(l0 == 1 or l1 == 1 or s0 == l1 * s1 for s0, s1 in strides)
    if even:
        step = tuple(s1 if l1 > 1 else s0 for s0, s1 in strides)
        return [((0, 0, 0, 0), l0 * l1, (step[0], step[1], step[2]))]
    return [((b0 * strides[0][0], b0 * strides[1][0], b0 * strides[2][0], b0 * l1), l1,
             (strides[0][1], strides[1][1], strides[2][1])) for b0 in range(l0)]


def element_fill(layer: LayerSpec, key: str, dtype: str) -> float:
    """A Where's fill as the unfused graph holds it: the float32 constant rounded once to the element type."""
    with np.errstate(over="ignore"):
        return float(np.float64(layer.attr(key)).astype(np_dtype(dtype)))


class CudaCublasAttention(Tactic):
    """FusedAttention as S = Q K^T (cuBLAS, into the workspace), one softmax kernel over S's rows that applies the
    layer's form, and P V (cuBLAS): every float type and form whose Q, K and V batch evenly. Float32 layers
    multiply in strict float32; float16 and bfloat16 on tensor cores with float32 accumulation."""

    family, ops, name, backend, source = "attention", ("FusedAttention",), "cuda_cublas", "cuda", "cublas"
    version = 3  # 2: Q, K, V that broadcast unevenly over the leading dims run as one GEMM pair per batch element;
    # 3: the "nan" guard (FusedAttention v4)
    dtypes = ("float32", "float16", "bfloat16", "bool")
    priority = 10
    capturable = True
    per_dtype_build = True
    needs_activation = False  # checked per operand in ``unsupported``
    cuda_kernels = MappingProxyType({"attention.cu": ("attention_softmax_rows",)})

    def unsupported(self, layer: LayerSpec) -> str | None:
        dtype = layer.inputs[0].dtype
        if dtype == "bool":
            return "Q is bool; attention runs float types"
        if any(i in layer.constants for i in range(3)):
            return "Q, K or V is a constant; this tactic reads all three as run-time activations"
        if len(layer.attr("masks")) > MAX_MASKS:
            return f"{len(layer.attr('masks'))} mask steps; the softmax kernel applies at most {MAX_MASKS}"
        rank = len(layer.outputs[0].shape)
        if rank > 4 or any(len(t.shape) > rank for t in layer.inputs):
            return f"attention of rank {rank}; this tactic takes at most two leading dims ([B, H, S, D])"
        g = AttentionGeometry.of(layer)
        if len(gemm_groups(g)) > MAX_GEMM_GROUPS:
            return (f"Q, K and V broadcast over {g.lead[0]} x {g.lead[1]} leading dims unevenly, which takes "
                    f"{g.lead[0]} pairs of GEMMs; this tactic launches at most {MAX_GEMM_GROUPS}")
        return None

    def workspace_bytes(self, layer: LayerSpec) -> int:
        g = AttentionGeometry.of(layer)
        return aligned(g.lead[0] * g.lead[1] * g.sq * g.sk * np_dtype(layer.inputs[0].dtype).itemsize)

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        if not isinstance(backend, CudaBackend):
            raise TypeError(f"{self.label} needs the cuda backend, not {backend.name}")
        g = AttentionGeometry.of(layer)
        dtype = self.kernel_dtype(layer)
        consts = {i: backend.asarray(v) for i, v in layer.constants.items()}
        refs = operand_refs(layer, consts)
        table_d, pointers = mask_table(backend, g, layer, refs)
        kt = int(layer.attr("k_transposed"))
        item = np_dtype(dtype).itemsize
        cap_mode = CAP_MODES[layer.attr("softcap_op")]
        guard = layer.attr("guard")
        rows = g.lead[0] * g.lead[1] * g.sq
        softmax = per_row(backend, "attention.cu", "attention_softmax_rows", rows, (
            Ws(), i64(rows), i32(g.sq), i32(g.sk), i32(g.lead[1]), f32(scale_factor(layer)), i32(cap_mode),
            f32(layer.attr("softcap_in") if cap_mode else 1.0), f32(layer.attr("softcap") if cap_mode else 1.0),
            i32(len(g.masks)), table_d, *pointers, f32(element_fill(layer, "fill", dtype)),
            refs[-1] if guard in INPUT_GUARDS else np.uint64(0),
            f32(element_fill(layer, "guard_fill", dtype) if guard != "none" else 0.0)),
            dtype=dtype)
        scores: list[GemmLaunch] = []
        products: list[GemmLaunch] = []
        for first, count, step in gemm_groups(g):
            (q0, k0, v0), (qs, ks, vs) = ((first[i] * item for i in range(3)), step)
            s0, o0 = first[3] * g.sq * g.sk * item, first[3] * g.sq * g.dv * item
            # Row-major S (Sq, Sk) = Q (Sq, D) @ K^T; in cuBLAS's column-major terms S^T = op(K) Q^T.
            scores.append(GemmLaunch(
                transa=not kt, transb=False, m=g.sk, n=g.sq, k=g.d, a=refs[1].at(k0), lda=g.d if not kt else g.sk,
                stride_a=ks, b=refs[0].at(q0), ldb=g.d, stride_b=qs, c=Ws(s0), ldc=g.sk, stride_c=g.sq * g.sk,
                batch=count, dtype=dtype, compute="fp32"))
            # out (Sq, Dv) = P (Sq, Sk) @ V (Sk, Dv): out^T = V^T P^T.
            products.append(GemmLaunch(
                transa=False, transb=False, m=g.dv, n=g.sq, k=g.sk, a=refs[2].at(v0), lda=g.dv, stride_a=vs,
                b=Ws(s0), ldb=g.sk, stride_b=g.sq * g.sk, c=Out(0, o0), ldc=g.dv, stride_c=g.sq * g.dv,
                batch=count, dtype=dtype, compute="fp32"))
        return plan(backend, *scores, softmax, *products, holds=(table_d, *consts.values()))


def causal_mask(layer: LayerSpec) -> bool:
    """Whether the layer's one mask step is exactly the top-left causal mask (query i sees keys 0..i), so that
    cuDNN's causal mask computes it bit for bit: a constant additive mask of 0 on and below the diagonal and -inf
    above it, or a constant Where condition that keeps exactly those scores and fills the others with -inf. The
    same on every leading index (the condition's leading dims are 1); no row is then fully masked."""
    steps = list(layer.attr("masks"))
    if len(steps) != 1 or 3 not in layer.constants:
        return False
    sq, sk = int(layer.inputs[0].shape[-2]), int(layer.inputs[1].shape[-2])
    value = layer.constants[3]
    if value.ndim < 2 or tuple(value.shape[-2:]) != (sq, sk) or any(n != 1 for n in value.shape[:-2]):
        return False
    plane, keep = value.reshape(sq, sk), np.tril(np.ones((sq, sk), dtype=bool))
    if steps[0] == "add":
        return bool(np.array_equal(plane == 0, keep) and np.isneginf(plane[~keep]).all())
    if not np.isneginf(float(layer.attr("fill"))):
        return False
    return bool(np.array_equal(plane.astype(bool), keep if steps[0] == "where" else ~keep))


def cudnn_unsupported(layer: LayerSpec) -> str | None:
    """Why cuDNN's SDPA cannot compute the layer's form exactly, or None (:func:`cudnn_problem` then describes it)."""
    dtype = layer.inputs[0].dtype
    if dtype not in cudnn_sdpa.DATA_TYPES:
        return f"Q is {dtype}; cuDNN's SDPA runs float16 and bfloat16 here"
    if any(i in layer.constants for i in range(3)):
        return "Q, K or V is a constant; cuDNN's SDPA reads all three as run-time activations"
    if layer.attr("guard") != "none":
        return (f"a {layer.attr('guard')!r} guard after the Softmax; cuDNN does not document what its SDPA gives for "
                "a row whose scores are all masked, so it runs no guarded form")
    if float(layer.attr("softcap")) != 0.0:
        return "a softcap before the masks; cuDNN's SDPA has no softcap step"
    if layer.attr("k_transposed"):
        return "K as [..., D, Sk]; cuDNN's SDPA takes K as [B, H, Sk, D] with the head dim contiguous"
    shapes = [tuple(t.shape) for t in (*layer.inputs[:3], layer.outputs[0])]
    if any(len(s) != 4 for s in shapes):
        return f"Q, K, V and the output have ranks {[len(s) for s in shapes]}; cuDNN's SDPA takes [B, H, S, D] each"
    (b, h, sq, d), (kb, kh, sk, _), (vb, vh, _, dv) = shapes[:3]
    if kb != b or vb != b or h % kh or h % vh:
        return (f"K and V of batch {kb}, {vb} and heads {kh}, {vh} for Q of batch {b} and heads {h}; cuDNN's SDPA "
                "takes K and V of Q's batch, their heads dividing Q's (grouped-query attention)")
    if d % 8 or dv % 8 or max(d, dv) > 128:
        return f"head dims {d} (Q, K) and {dv} (V); cuDNN's SDPA is offered for multiples of 8 up to 128"
    steps = list(layer.attr("masks"))
    if not steps or causal_mask(layer):
        return None
    if steps != ["add"]:
        return (f"mask steps {steps}; cuDNN's SDPA takes one additive mask (its bias), or a Where only when it is "
                "exactly the top-left causal mask with fill -inf (a constant condition)")
    mask = (1, 1, 1, 1, *layer.inputs[3].shape)[-4:]
    if len(layer.inputs[3].shape) > 4 or tuple(mask[2:]) != (sq, sk):
        return (f"an additive mask of shape {list(layer.inputs[3].shape)}; cuDNN's bias is [1|B, 1|H, Sq, Sk], "
                "broadcast over the batch and the heads only")
    return None


def cudnn_problem(layer: LayerSpec) -> cudnn_sdpa.SdpaProblem:
    """The layer (one :func:`cudnn_unsupported` accepts) as cuDNN's SDPA takes it."""
    (b, h, sq, d), (_, kh, sk, _), (_, vh, _, dv) = (tuple(int(n) for n in t.shape) for t in layer.inputs[:3])
    causal = causal_mask(layer)
    bias = None
    if layer.attr("masks") and not causal:
        bias = tuple(int(n) for n in (1, 1, 1, 1, *layer.inputs[3].shape)[-4:])
    return cudnn_sdpa.SdpaProblem(dtype=layer.inputs[0].dtype, batch=b, heads=h, k_heads=kh, v_heads=vh, sq=sq,
                                  sk=sk, d=d, dv=dv, scale=float(np.float32(scale_factor(layer))),
                                  bias=bias, causal=causal)  # type: ignore[arg-type]


class CudaCudnnSdpa(Tactic):
    """FusedAttention as cuDNN's fused SDPA (``cudnn_sdpa.py``), one variant per engine configuration cuDNN's
    heuristics offer for the layer (at most ``cudnn_sdpa.CANDIDATES``, none flagged nondeterministic), each timed as
    a tactic of its own and recorded by value (``cudnn_sdpa.FIELDS``); the workspace is the layer's, sized by the
    recorded plan. The scale is cuDNN's attn_scale, one float32 factor on the float32 scores (as the flash kernel
    applies it); an additive mask is cuDNN's bias, and a causal mask its top-left diagonal band."""

    family, ops, name, backend, source = "attention", ("FusedAttention",), "cuda_cudnn_sdpa", "cuda", "cudnn"
    #: float16/bfloat16 Q, K, V and additive masks; bool for a causal Where's condition.
    dtypes = ("float16", "bfloat16", "bool")
    priority = 7
    capturable = True
    per_layer_parameters = True
    min_compute_capability = 80
    needs_activation = False  # checked per operand in ``unsupported``

    def unsupported(self, layer: LayerSpec) -> str | None:
        return cudnn_unsupported(layer) or cudnn_sdpa.unavailable_reason()

    def layer_parameter_problem(self, parameters: Any) -> str | None:
        return cudnn_sdpa.parameter_problem(parameters)

    def workspace_bytes(self, layer: LayerSpec) -> int:
        return int(self.parameters.get("workspace", 0))

    def variants(self, layer: LayerSpec, backend: Backend) -> list[Tactic]:
        with backend.activate():
            return [self.with_parameters(p) for p in cudnn_sdpa.plans(cudnn_problem(layer))]

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        require_recorded(self, layer, "cuDNN plan", cudnn_sdpa.unavailable_reason(), cudnn_sdpa.label(self.parameters))
        if not isinstance(backend, CudaBackend):
            raise TypeError(f"{self.label} needs the cuda backend, not {backend.name}")
        problem = cudnn_problem(layer)
        consts = {i: backend.asarray(v) for i, v in layer.constants.items()}
        refs = operand_refs(layer, consts)
        with backend.activate():
            executable = cudnn_sdpa.Executable(problem, self.parameters)
        launches: tuple[Any, ...] = (CudnnSdpaLaunch(executable, refs[0], refs[1], refs[2], Out(0), Ws(0),
                                                     refs[3] if problem.bias is not None else None),)
        return LibraryLaunchPlan(backend, launches, tuple(consts.values()))


class CudaFlashAttentionD32(_CudaFlashAttention):
    name, priority, HEAD_DIM = "cuda_flash_d32", 5, 32


class CudaFlashAttentionD64(_CudaFlashAttention):
    name, priority, HEAD_DIM = "cuda_flash_d64", 5, 64


class CudaFlashAttentionD128(_CudaFlashAttention):
    name, priority, HEAD_DIM = "cuda_flash_d128", 5, 128


TACTICS: tuple[Tactic, ...] = (
    CudaCublasAttention(), CudaCudnnSdpa(), CudaFlashAttentionD32(), CudaFlashAttentionD64(), CudaFlashAttentionD128())

"""Matrix-product tactics for Gemm (alpha, beta, transA, transB, optional C) and MatMul (batched, broadcast).

CPU: one BLAS call; and a blocked product that accumulates fixed-size K panels in a fixed order. CUDA: cuBLAS
strided-batched GEMMs (strict float32, or TF32 tensor cores) with an epilogue kernel, and a shared-memory tiled
SGEMM; all compile ``gemm.cu`` and describe their launches as data (``launch.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from reprobuild.core.dtypes import np_dtype
from reprobuild.core.errors import BuildError
from reprobuild.kernels import cublaslt
from reprobuild.kernels.backend import Backend
from reprobuild.kernels.cublas import WORKSPACE_BYTES
from reprobuild.kernels.cuda_launch import cdiv, f32, i32, i64, kernel_launch, linear, operand_refs, plan
from reprobuild.kernels.formulas import ACTIVATION_CODES
from reprobuild.kernels.launch import MAX_GRID_YZ, GemmLaunch, KernelLaunch, LibraryLaunchPlan, LtMatmulLaunch, Out, Ws
from reprobuild.kernels.nvrtc import integer_defines
from reprobuild.kernels.tactic import Determinism, Kernel, LayerSpec, Tactic, positional, require_recorded


class GemmOperands:
    """Gemm and MatMul as one problem: out = alpha * op(A) @ op(B) + beta * C."""

    def __init__(self, layer: LayerSpec) -> None:
        self.is_gemm = layer.op == "Gemm"
        self.alpha = float(layer.attr("alpha", 1.0))
        self.beta = float(layer.attr("beta", 1.0))
        self.trans_a = bool(layer.attr("transA", 0))
        self.trans_b = bool(layer.attr("transB", 0))
        self.has_c = self.is_gemm and len(layer.inputs) > 2
        a = layer.inputs[0].shape
        self.k = a[0] if self.trans_a else a[-1]
        self.m, self.n = layer.outputs[0].shape[-2:]

    def host_constants(self, layer: LayerSpec) -> dict[int, np.ndarray]:
        """Constant operands, transposed once here so the kernels see plain row-major A (M x K), B (K x N)."""
        consts: dict[int, np.ndarray] = {}
        for i, value in layer.constants.items():
            arr = value.astype(np.float32, copy=False)
            if (i == 0 and self.trans_a) or (i == 1 and self.trans_b):
                arr = arr.T
            consts[i] = np.ascontiguousarray(arr)
        return consts

    def operands(self, layer: LayerSpec, consts: dict[int, Any], inputs: Sequence[Any]) -> list[Any]:
        args = positional(layer, consts, inputs)
        if self.trans_a and 0 not in consts:
            args[0] = args[0].T
        if self.trans_b and 1 not in consts:
            args[1] = args[1].T
        return args

    def epilogue(self, out: Any, c: Any) -> None:
        if self.alpha != 1.0:
            out *= np.float32(self.alpha)
        if self.has_c:
            out += c if self.beta == 1.0 else np.float32(self.beta) * c


#: Activation codes of epilogue.cuh's ``residual_activation`` (the ``activation`` attribute of FusedConv and
#: FusedGemm), from the formula table that writes it.
ACTIVATIONS = ACTIVATION_CODES


def unsupported_epilogue(layer: LayerSpec) -> str | None:
    activation = str(layer.attr("activation", ""))
    if activation not in ACTIVATIONS:
        return f"activation {activation!r} has no epilogue; supported: {', '.join(a for a in ACTIVATIONS if a)}"
    return None


def unsupported_gemm(layer: LayerSpec) -> str | None:
    """What the hand-written products need: operands of rank 2 or more (MatMul of a vector is the reference's)."""
    if min(len(layer.inputs[0].shape), len(layer.inputs[1].shape)) < 2:
        return "only operands of rank >= 2; a 1-D operand is left to the reference tactic"
    return None


class CpuBlasGemm(Tactic):
    family, ops, name, backend, priority = "gemm", ("Gemm", "MatMul"), "cpu_blas", "cpu", 10

    def unsupported(self, layer: LayerSpec) -> str | None:
        return unsupported_gemm(layer)

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        g = GemmOperands(layer)
        consts = g.host_constants(layer)

        def run(inputs: Sequence[Any], outputs: Sequence[Any], workspace: Any) -> None:
            args = g.operands(layer, consts, inputs)
            np.matmul(args[0], args[1], out=outputs[0])
            g.epilogue(outputs[0], args[2] if g.has_c else None)

        return run


class CpuBlockedGemm(Tactic):
    """Sum of K-panel products, panels in increasing K: a fixed accumulation order independent of BLAS blocking."""

    family, ops, name, backend, priority = "gemm", ("Gemm", "MatMul"), "cpu_blocked_k", "cpu", 20
    parameters = MappingProxyType({"block_k": 128})

    def unsupported(self, layer: LayerSpec) -> str | None:
        return unsupported_gemm(layer)

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        g = GemmOperands(layer)
        consts = g.host_constants(layer)
        bk = int(self.parameters["block_k"])

        def run(inputs: Sequence[Any], outputs: Sequence[Any], workspace: Any) -> None:
            args = g.operands(layer, consts, inputs)
            a, b, out = args[0], args[1], outputs[0]
            np.matmul(a[..., :, 0:bk], b[..., 0:bk, :], out=out)
            for k0 in range(bk, g.k, bk):
                out += np.matmul(a[..., :, k0:k0 + bk], b[..., k0:k0 + bk, :])
            g.epilogue(out, args[2] if g.has_c else None)

        return run


def c_strides(shape: tuple[int, ...]) -> tuple[int, int]:
    """Element strides (row, column) of a contiguous C read as (M, N): 0 along the dimensions it broadcasts."""
    cm, cn = (1, 1, *shape)[-2:]
    return (cn if cm != 1 else 0), (1 if cn != 1 else 0)


def uniform_stride(offsets: np.ndarray) -> int | None:
    """The common difference of ``offsets`` (0 for a single product), or None when they are not evenly spaced."""
    if offsets.size <= 1:
        return 0
    step = int(offsets[1] - offsets[0])
    return step if np.array_equal(offsets, offsets[0] + step * np.arange(offsets.size, dtype=np.int64)) else None


def epilogue_launch(backend: Backend, g: GemmOperands, layer: LayerSpec, c: Any) -> list[KernelLaunch]:
    """out = alpha * out + beta * C after a product that computed out = A @ B (nothing when alpha is 1, no C), in
    the output's dtype."""
    if g.alpha == 1.0 and not g.has_c:
        return []
    c_rs, c_cs = c_strides(layer.inputs[2].shape) if g.has_c else (0, 0)
    return [linear(backend, "gemm.cu", "gemm_epilogue", g.m * g.n, (
        Out(0), c if g.has_c else None, i64(g.m), i64(g.n), i64(c_rs), i64(c_cs), f32(g.alpha), f32(g.beta),
        i32(g.has_c)), dtype=layer.outputs[0].dtype)]


class CublasProduct:
    """Row-major out (batch, M, N) = A (batch, M, K) @ B (batch, K, N) as one cuBLAS strided-batched GEMM.

    cuBLAS is column-major: a row-major (R, C) matrix is its (C, R) transpose there, so the call computes
    out^T = B^T @ A^T, with B as cuBLAS's first operand. A batch whose operand offsets are not evenly spaced
    (general broadcasting) is not a strided batch and is refused."""

    def __init__(self, layer: LayerSpec, g: GemmOperands, consts: dict[int, Any]) -> None:
        batch = tuple(layer.outputs[0].shape[:-2])
        self.count = int(np.prod(batch, dtype=np.int64))
        self.stride_a = uniform_stride(batch_offsets(batch, layer.inputs[0].shape[:-2], g.m * g.k))
        self.stride_b = uniform_stride(batch_offsets(batch, layer.inputs[1].shape[:-2], g.k * g.n))
        # A activation read transposed is (K, M) row-major; a constant was transposed on the host already.
        self.trans_a = g.trans_a and 0 not in consts
        self.trans_b = g.trans_b and 1 not in consts

    def unsupported(self) -> str | None:
        if self.stride_a is None or self.stride_b is None:
            return "the operands' batch dimensions broadcast unevenly; not one strided-batched GEMM"
        return None

    def launch(self, g: GemmOperands, a: Any, b: Any, out: Any, dtype: str, compute: str) -> GemmLaunch:
        assert self.stride_a is not None and self.stride_b is not None
        m, count, stride_a = g.m, self.count, self.stride_a
        if self.stride_b == 0 and count > 1 and not self.trans_a and stride_a == g.m * g.k and m * count < 2**31:
            m, count, stride_a = g.m * count, 1, 0  # a batch of A against one B: one tall product
        return GemmLaunch(
            transa=self.trans_b, transb=self.trans_a, m=g.n, n=m, k=g.k,
            a=b, lda=g.k if self.trans_b else g.n, stride_a=self.stride_b,
            b=a, ldb=g.m if self.trans_a else g.k, stride_b=stride_a,
            c=out, ldc=g.n, stride_c=g.m * g.n, batch=count, dtype=dtype, compute=compute)


class CudaCublasGemm(Tactic):
    """One cuBLAS strided-batched GEMM (through a handle with its own workspace, capturable), then one epilogue
    kernel for alpha and beta * C. Version 2: cublasGemmStridedBatchedEx instead of ``cupy.matmul``. Float16
    layers: half operands and output, float32 accumulation (``CUBLAS_COMPUTE_32F``, tensor cores)."""

    family, ops, name, backend, priority = "gemm", ("Gemm", "MatMul"), "cuda_cublas", "cuda", 10
    dtypes: tuple[str, ...] = ("float32", "float16", "bfloat16")
    per_dtype_build = True
    capturable = True
    version = 2
    source = "cublas"
    cuda_kernels = MappingProxyType({"gemm.cu": ("gemm_epilogue",)})
    compute = "fp32"

    def unsupported(self, layer: LayerSpec) -> str | None:
        reason = unsupported_gemm(layer)
        if reason is not None:
            return reason
        return CublasProduct(layer, GemmOperands(layer), dict(layer.constants)).unsupported()

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        g, dtype = GemmOperands(layer), layer.outputs[0].dtype
        # float32 on the host (a float16 constant widens exactly), the layer's dtype on the device
        consts = {i: backend.asarray(v.astype(np_dtype(dtype), copy=False)) for i, v in g.host_constants(layer).items()}
        args = operand_refs(layer, consts)
        gemm = CublasProduct(layer, g, consts).launch(g, args[0], args[1], Out(0), dtype, self.compute)
        return plan(backend, gemm, *epilogue_launch(backend, g, layer, args[2] if g.has_c else None),
                    holds=tuple(consts.values()))


class CudaCublasGemmTf32(CudaCublasGemm):
    """cuBLAS with TF32 tensor cores (10-bit mantissa inputs, float32 accumulation): allowed by
    ``--precision tf32`` and lower."""

    name, priority, math, compute = "cuda_cublas_tf32", 9, "tf32", "tf32"
    version = 1
    dtypes = ("float32",)


#: gemm.cu's tile sizes, read from its ``#define`` lines (the one place they are written).
TILE = MappingProxyType(integer_defines("gemm.cu"))


class TiledGemmLaunch:
    """One launch of ``sgemm_tiled`` (gemm.cu) over a batch of products that share M, N, K and strides.

    ``offsets`` is (batch, 4) int64: the element offsets of A, B, the output and C for each product, which is how
    broadcast batch dimensions (offset repeated), convolution groups and images are all expressed.
    """

    BM, BN, BK, THREADS = TILE["BM"], TILE["BN"], TILE["BK"], TILE["THREADS"]
    PARAMETERS = MappingProxyType({"block_m": BM, "block_n": BN, "block_k": BK, "threads": THREADS,
                                   "thread_m": TILE["TM"], "thread_n": TILE["TN"]})

    def __init__(self, backend: Backend, m: int, n: int, k: int, a_strides: tuple[int, int],
                 b_strides: tuple[int, int], offsets: np.ndarray, c_strides: tuple[int, int] = (0, 0),
                 alpha: float = 1.0, beta: float = 1.0, has_c: bool = False) -> None:
        self.backend = backend
        self.batch = int(offsets.shape[0])
        self.offsets = backend.asarray(np.ascontiguousarray(offsets, dtype=np.int64))
        self.grid = (cdiv(n, self.BN), cdiv(m, self.BM))
        self.scalars = (
            i32(m, "M"), i32(n, "N"), i32(k, "K"), i64(a_strides[0]), i64(a_strides[1]), i64(b_strides[0]),
            i64(b_strides[1]), i64(n), i64(c_strides[0]), i64(c_strides[1]), f32(alpha), f32(beta), i32(has_c))

    @classmethod
    def unsupported(cls, m: int, batch: int) -> str | None:
        if cdiv(m, cls.BM) > MAX_GRID_YZ or batch > MAX_GRID_YZ:
            return (f"M={m} and a batch of {batch} need a grid of {cdiv(m, cls.BM)} x {batch} blocks; CUDA allows "
                    f"at most {MAX_GRID_YZ} in each")
        return None

    def launch(self, a: Any, b: Any, out: Any, c: Any = None, batch: int | None = None) -> KernelLaunch:
        """The launch of the first ``batch`` products (all by default) with these base arrays or refs."""
        z = self.batch if batch is None else batch
        return kernel_launch(self.backend, "gemm.cu", "sgemm_tiled", (*self.grid, z), (self.THREADS, 1, 1),
                             (a, b, out, c, self.offsets, *self.scalars))


def batch_offsets(batch_shape: tuple[int, ...], operand_batch: tuple[int, ...], matrix_size: int) -> np.ndarray:
    """Element offset of an operand's matrix for every index of the broadcast batch, in row-major order."""
    padded = (1,) * (len(batch_shape) - len(operand_batch)) + tuple(operand_batch)
    index = np.arange(int(np.prod(padded, dtype=np.int64)), dtype=np.int64).reshape(padded)
    return np.broadcast_to(index * matrix_size, batch_shape).reshape(-1)


class CudaTiledGemm(Tactic):
    """Shared-memory tiled SGEMM with the epilogue fused; batched MatMul as gridDim.z with per-product offsets."""

    family, ops, name, backend, priority = "gemm", ("Gemm", "MatMul"), "cuda_tiled", "cuda", 20
    version = 2  # gemm.cu's one store walk (store_outputs) and its tile sizes read by TILE; the same sums
    capturable = True
    source = "nvrtc"
    cuda_kernels = MappingProxyType({"gemm.cu": ("sgemm_tiled",)})
    parameters = TiledGemmLaunch.PARAMETERS

    def unsupported(self, layer: LayerSpec) -> str | None:
        reason = unsupported_gemm(layer)
        if reason is not None:
            return reason
        g = GemmOperands(layer)
        return TiledGemmLaunch.unsupported(g.m, int(np.prod(layer.outputs[0].shape[:-2], dtype=np.int64)))

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        g = GemmOperands(layer)
        consts = {i: backend.asarray(v) for i, v in g.host_constants(layer).items()}
        # Constants were transposed on the host; a transposed activation is read through its strides.
        a_strides = (1, g.m) if g.trans_a and 0 not in consts else (g.k, 1)
        b_strides = (1, g.k) if g.trans_b and 1 not in consts else (g.n, 1)
        batch = tuple(layer.outputs[0].shape[:-2])
        offsets = np.stack([
            batch_offsets(batch, layer.inputs[0].shape[:-2], g.m * g.k),
            batch_offsets(batch, layer.inputs[1].shape[:-2], g.k * g.n),
            batch_offsets(batch, batch, g.m * g.n),
            np.zeros(int(np.prod(batch, dtype=np.int64)), dtype=np.int64),
        ], axis=1)
        gemm = TiledGemmLaunch(backend, g.m, g.n, g.k, a_strides, b_strides, offsets,
                               c_strides(layer.inputs[2].shape) if g.has_c else (0, 0), g.alpha, g.beta, g.has_c)
        args = operand_refs(layer, consts)
        return plan(backend, gemm.launch(args[0], args[1], Out(0), args[2] if g.has_c else None),
                    holds=(*consts.values(), gemm.offsets))


class CudaSplitKAtomicGemm(Tactic):
    """NOT run-to-run deterministic, on purpose: K is split over blocks that atomicAdd their partial sums into
    the output, so the order of the additions, and the rounding, varies between runs. A real nondeterministic
    tactic for the determinism policy (excluded by default), ``reprobuild verify`` and the divergence locator."""

    family, ops, name, backend, priority = "gemm", ("Gemm", "MatMul"), "cuda_splitk_atomic", "cuda", 90
    version = 2  # gemm.cu's one store walk (store_outputs) and its tile sizes read by TILE
    capturable = True
    source = "nvrtc"
    cuda_kernels = MappingProxyType({"gemm.cu": ("fill_zero", "gemm_epilogue", "sgemm_splitk_atomic")})
    determinism = Determinism.NONE
    #: Each block sums 256 of K, flushing every BK-wide step with atomicAdd (see gemm.cu for why per step).
    parameters = MappingProxyType({**TiledGemmLaunch.PARAMETERS, "k_per_split": 256})

    def unsupported(self, layer: LayerSpec) -> str | None:
        if len(layer.outputs[0].shape) != 2 or unsupported_gemm(layer):
            return "only 2-D products (no batch dimensions)"
        g = GemmOperands(layer)
        return TiledGemmLaunch.unsupported(g.m, cdiv(g.k, int(self.parameters["k_per_split"])))

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        g = GemmOperands(layer)
        consts = {i: backend.asarray(v) for i, v in g.host_constants(layer).items()}
        a_rs, a_cs = (1, g.m) if g.trans_a and 0 not in consts else (g.k, 1)
        b_rs, b_cs = (1, g.k) if g.trans_b and 1 not in consts else (g.n, 1)
        k_per_split = int(self.parameters["k_per_split"])
        grid = (cdiv(g.n, TiledGemmLaunch.BN), cdiv(g.m, TiledGemmLaunch.BM), cdiv(g.k, k_per_split))
        scalars = (i32(g.m, "M"), i32(g.n, "N"), i32(g.k, "K"), i64(a_rs), i64(a_cs), i64(b_rs), i64(b_cs),
                   i64(g.n), i32(k_per_split))
        args = operand_refs(layer, consts)
        total = g.m * g.n
        return plan(backend,
                    linear(backend, "gemm.cu", "fill_zero", total, (Out(0), i64(total))),
                    kernel_launch(backend, "gemm.cu", "sgemm_splitk_atomic", grid, (TiledGemmLaunch.THREADS, 1, 1),
                                  (args[0], args[1], Out(0), *scalars)),
                    *epilogue_launch(backend, g, layer, args[2] if g.has_c else None),
                    holds=tuple(consts.values()))


class FusedProduct:
    """A FusedGemm as one tall product: A (..., M, K) read as (rows, K), B the constant (K, N) weight, the bias a
    constant (N,) and the residual (input 3) an activation of the output's shape; and its epilogue's arguments."""

    def __init__(self, layer: LayerSpec) -> None:
        self.k, self.n = layer.inputs[1].shape
        self.rows = int(np.prod(layer.inputs[0].shape[:-1], dtype=np.int64))
        self.has_residual = len(layer.inputs) > 3
        self.epilogue_args = (i32(ACTIVATIONS[str(layer.attr("activation", ""))]),
                              f32(float(layer.attr("activation_min", 0.0))),
                              f32(float(layer.attr("activation_max", 0.0))))

    @staticmethod
    def unsupported(layer: LayerSpec) -> str | None:
        if 1 not in layer.constants or 2 not in layer.constants:
            return "the weight (input 1) and the bias (input 2) must be constants"
        return unsupported_epilogue(layer)

    def constants(self, layer: LayerSpec, backend: Backend) -> dict[int, Any]:
        """The weight and the bias on the device, in the layer's dtype."""
        dtype = np_dtype(layer.outputs[0].dtype)
        return {i: backend.asarray(np.ascontiguousarray(layer.constants[i]).astype(dtype, copy=False))
                for i in (1, 2)}


class CudaCublasFusedGemm(Tactic):
    """FusedGemm as one cuBLAS GEMM of the (rows, K) activation by the (K, N) weight, then one kernel for the bias,
    the residual and the activation (gemm.cu ``gemm_bias_epilogue``). Half and bfloat16 layers accumulate in
    float32 on tensor cores."""

    family, ops, name, backend, priority = "gemm", ("FusedGemm",), "cuda_cublas_epilogue", "cuda", 10
    version = 2  # epilogue.cuh written from the formula table (Clip with min > max gives max, as ONNX)
    dtypes: tuple[str, ...] = ("float32", "float16", "bfloat16")
    per_dtype_build = True
    capturable = True
    source = "cublas"
    cuda_kernels = MappingProxyType({"gemm.cu": ("gemm_bias_epilogue",)})
    compute = "fp32"

    def unsupported(self, layer: LayerSpec) -> str | None:
        return FusedProduct.unsupported(layer)

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        f, dtype = FusedProduct(layer), layer.outputs[0].dtype
        consts = f.constants(layer, backend)
        args = operand_refs(layer, consts)
        total = f.rows * f.n
        gemm = GemmLaunch(transa=False, transb=False, m=f.n, n=f.rows, k=f.k, a=consts[1], lda=f.n, stride_a=0,
                          b=args[0], ldb=f.k, stride_b=0, c=Out(0), ldc=f.n, stride_c=total, batch=1, dtype=dtype,
                          compute=self.compute)
        epilogue = linear(backend, "gemm.cu", "gemm_bias_epilogue", total, (
            Out(0), consts[2], args[3] if f.has_residual else None, i64(f.n), i64(total), *f.epilogue_args),
            dtype=dtype)
        return plan(backend, gemm, epilogue, holds=tuple(consts.values()))


class CudaCublasFusedGemmTf32(CudaCublasFusedGemm):
    """``cuda_cublas_epilogue`` with TF32 tensor cores: allowed by ``--precision tf32`` and lower."""

    name, priority, math, compute = "cuda_cublas_epilogue_tf32", 9, "tf32", "tf32"
    dtypes = ("float32",)


class CudaTiledFusedGemm(Tactic):
    """FusedGemm in one kernel: ``sgemm_tiled``'s shared-memory tiles on the layer's element type, accumulated in
    float32, with the bias, residual and activation applied as each output is stored (gemm.cu
    ``gemm_tiled_epilogue``). One launch instead of two: what wins where the product is small."""

    family, ops, name, backend, priority = "gemm", ("FusedGemm",), "cuda_tiled_epilogue", "cuda", 20
    version = 2  # epilogue.cuh from the formula table; gemm.cu's one store walk; its tile sizes read by TILE
    dtypes: tuple[str, ...] = ("float32", "float16", "bfloat16")
    per_dtype_build = True
    capturable = True
    source = "nvrtc"
    cuda_kernels = MappingProxyType({"gemm.cu": ("gemm_tiled_epilogue",)})
    parameters = TiledGemmLaunch.PARAMETERS

    def unsupported(self, layer: LayerSpec) -> str | None:
        reason = FusedProduct.unsupported(layer)
        if reason is not None:
            return reason
        f = FusedProduct(layer)
        if cdiv(f.rows, TiledGemmLaunch.BM) > MAX_GRID_YZ:
            return (f"{f.rows} rows need {cdiv(f.rows, TiledGemmLaunch.BM)} blocks in grid y; CUDA allows at most "
                    f"{MAX_GRID_YZ}")
        return None

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        f, dtype = FusedProduct(layer), layer.outputs[0].dtype
        consts = f.constants(layer, backend)
        args = operand_refs(layer, consts)
        grid = (cdiv(f.n, TiledGemmLaunch.BN), cdiv(f.rows, TiledGemmLaunch.BM), 1)
        launch = kernel_launch(backend, "gemm.cu", "gemm_tiled_epilogue", grid, (TiledGemmLaunch.THREADS, 1, 1), (
            args[0], consts[1], Out(0), consts[2], args[3] if f.has_residual else None, i32(f.rows, "rows"),
            i32(f.n, "N"), i32(f.k, "K"), *f.epilogue_args), dtype=dtype)
        return plan(backend, launch, holds=tuple(consts.values()))


class _CublasLtAlgorithms(Tactic):
    """What the cuBLASLt tactics share: one variant per algorithm cuBLASLt's heuristic offers for the layer
    (``cublaslt.heuristic``, in the library's order, at most ``cublaslt.CANDIDATES``), each timed as a tactic of
    its own and recorded by value (``cublaslt.FIELDS``); the workspace is the layer's, sized by the algorithm. A
    split-K algorithm is left out of run-to-run deterministic builds (its partial sums may be reduced in another
    order), which is stricter than needed for the schemes that reduce in a fixed order, and simple to audit."""

    family, backend = "gemm", "cuda"
    dtypes: tuple[str, ...] = ("float32", "float16", "bfloat16")
    per_dtype_build = True
    capturable = True
    source = "cublaslt"
    per_layer_parameters = True
    compute = "fp32"

    def unsupported(self, layer: LayerSpec) -> str | None:
        return cublaslt.unavailable_reason()

    def layer_parameter_problem(self, parameters: Any) -> str | None:
        return cublaslt.parameter_problem(parameters)

    def with_parameters(self, parameters: Any) -> Tactic:
        bound = super().with_parameters(parameters)
        if int(bound.parameters.get("split_k", 1)) > 1:
            bound.determinism = Determinism.NONE
        return bound

    def workspace_bytes(self, layer: LayerSpec) -> int:
        return int(self.parameters.get("workspace", 0))

    def matmul(self, layer: LayerSpec, consts: dict[int, Any]) -> tuple[GemmLaunch, str, Any]:
        """The layer's product as cuBLAS's column-major GEMM, the epilogue cuBLASLt fuses into it and its bias."""
        raise NotImplementedError

    def variants(self, layer: LayerSpec, backend: Backend) -> list[Tactic]:
        gemm, epilogue, _ = self.matmul(layer, dict(layer.constants))
        probe = LtMatmulLaunch.of(gemm, {}, Ws(0), epilogue)
        return [self.with_parameters(p) for p in cublaslt.heuristic(probe, WORKSPACE_BYTES)]

    def launch(self, layer: LayerSpec, gemm: GemmLaunch, epilogue: str, bias: Any) -> LtMatmulLaunch:
        require_recorded(self, layer, "cuBLASLt algorithm", cublaslt.unavailable_reason(),
                         cublaslt.label(self.parameters))
        if self.parameters["epilogue"] != epilogue:
            raise BuildError(f"tactic {self.label} was recorded with epilogue {self.parameters['epilogue']} on "
                             f"layer {layer.name!r}, which needs {epilogue}")
        return LtMatmulLaunch.of(gemm, self.parameters, Ws(0), epilogue, bias)


class CudaCublasLtGemm(_CublasLtAlgorithms):
    """Gemm and MatMul as one cuBLASLt matmul (strided-batched, the geometry of ``cuda_cublas``) with a recorded
    algorithm, then ``gemm.cu``'s epilogue kernel for alpha and beta * C where the layer has them."""

    ops, name, priority = ("Gemm", "MatMul"), "cuda_cublaslt", 8
    cuda_kernels = MappingProxyType({"gemm.cu": ("gemm_epilogue",)})

    def unsupported(self, layer: LayerSpec) -> str | None:
        reason = unsupported_gemm(layer) or cublaslt.unavailable_reason()
        if reason is not None:
            return reason
        return CublasProduct(layer, GemmOperands(layer), dict(layer.constants)).unsupported()

    def matmul(self, layer: LayerSpec, consts: dict[int, Any]) -> tuple[GemmLaunch, str, Any]:
        g = GemmOperands(layer)
        args = operand_refs(layer, consts)
        gemm = CublasProduct(layer, g, consts).launch(g, args[0], args[1], Out(0), layer.outputs[0].dtype,
                                                      self.compute)
        return gemm, "DEFAULT", None

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        g, dtype = GemmOperands(layer), layer.outputs[0].dtype
        consts = {i: backend.asarray(v.astype(np_dtype(dtype), copy=False)) for i, v in g.host_constants(layer).items()}
        gemm, epilogue, bias = self.matmul(layer, consts)
        args = operand_refs(layer, consts)
        launches: list[Any] = [self.launch(layer, gemm, epilogue, bias),
                               *epilogue_launch(backend, g, layer, args[2] if g.has_c else None)]
        return LibraryLaunchPlan(backend, tuple(launches), tuple(consts.values()))


class CudaCublasLtFusedGemm(_CublasLtAlgorithms):
    """FusedGemm as one cuBLASLt matmul with a recorded algorithm. The bias, and a Relu, are fused into the
    matmul (cuBLASLt's ``BIAS`` / ``RELU_BIAS`` epilogues: added to the float32 accumulator before the one
    rounding to the output type); a residual or another activation runs after it in ``gemm_bias_epilogue``, as
    ``cuda_cublas_epilogue`` does."""

    ops, name, priority = ("FusedGemm",), "cuda_cublaslt_epilogue", 8
    cuda_kernels = MappingProxyType({"gemm.cu": ("gemm_bias_epilogue",)})

    def unsupported(self, layer: LayerSpec) -> str | None:
        return FusedProduct.unsupported(layer) or cublaslt.unavailable_reason()

    @staticmethod
    def fused(layer: LayerSpec) -> str | None:
        """The cuBLASLt epilogue that computes the whole of the layer's epilogue, or None when a kernel must."""
        if len(layer.inputs) > 3:
            return None
        return {"": "BIAS", "Relu": "RELU_BIAS"}.get(str(layer.attr("activation", "")))

    def matmul(self, layer: LayerSpec, consts: dict[int, Any]) -> tuple[GemmLaunch, str, Any]:
        f, args = FusedProduct(layer), operand_refs(layer, consts)
        gemm = GemmLaunch(transa=False, transb=False, m=f.n, n=f.rows, k=f.k, a=consts.get(1), lda=f.n,
                          stride_a=0, b=args[0], ldb=f.k, stride_b=0, c=Out(0), ldc=f.n, stride_c=f.rows * f.n,
                          batch=1, dtype=layer.outputs[0].dtype, compute=self.compute)
        epilogue = self.fused(layer)
        return gemm, epilogue or "DEFAULT", consts.get(2) if epilogue else None

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        f, dtype = FusedProduct(layer), layer.outputs[0].dtype
        consts = f.constants(layer, backend)
        gemm, epilogue, bias = self.matmul(layer, consts)
        launches: list[Any] = [self.launch(layer, gemm, epilogue, bias)]
        if epilogue == "DEFAULT":
            args, total = operand_refs(layer, consts), f.rows * f.n
            launches.append(linear(backend, "gemm.cu", "gemm_bias_epilogue", total, (
                Out(0), consts[2], args[3] if f.has_residual else None, i64(f.n), i64(total), *f.epilogue_args),
                dtype=dtype))
        return LibraryLaunchPlan(backend, tuple(launches), tuple(consts.values()))


TACTICS: tuple[Tactic, ...] = (CpuBlasGemm(), CpuBlockedGemm(), CudaCublasFusedGemm(), CudaCublasFusedGemmTf32(),
                               CudaCublasGemm(), CudaCublasGemmTf32(), CudaCublasLtFusedGemm(), CudaCublasLtGemm(),
                               CudaSplitKAtomicGemm(), CudaTiledFusedGemm(), CudaTiledGemm())

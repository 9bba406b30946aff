"""Launch plans: a prepared CUDA layer described as data, so that a run is a flat list that can be replayed
without per-layer Python and captured into a CUDA graph.

A tactic's ``prepare`` returns a :class:`LaunchPlan`: kernel launches (a compiled function, grid, block, shared
memory, arguments) and cuBLAS calls (:class:`GemmLaunch`), in order. Arguments that name run-time memory are
:class:`Ref` objects (an activation input, an output or the workspace, plus a byte offset); weights are the
device arrays the plan holds (the engine's persistent memory); scalars are typed NumPy scalars. An execution
context :meth:`binds <LaunchPlan.bind>` each plan once to its arena, turning refs into addresses; a run then
replays the bound list, or a CUDA graph captured from it.

A plan is also a :class:`~reprobuild.kernels.tactic.Kernel`: calling it with arrays binds and runs it at once,
which is how the builder times candidates and how tests run one tactic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reprobuild.kernels import cublaslt
from reprobuild.kernels.backend import Backend, CudaBackend
from reprobuild.kernels.capture import BoundLaunch, capture

#: The largest gridDim.y and gridDim.z CUDA accepts, and the largest gridDim.x (and 32-bit int).
MAX_GRID_YZ = 65535
INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class Ref:
    """Run-time memory a launch reads or writes: activation input ``index`` (``role="in"``), output ``index``
    (``"out"``) or the workspace (``"ws"``), ``offset`` bytes in."""

    role: str
    index: int = 0
    offset: int = 0

    def at(self, offset: int) -> Ref:
        """The same buffer, ``offset`` more bytes in."""
        return Ref(self.role, self.index, self.offset + int(offset))


def In(index: int, offset: int = 0) -> Ref:
    return Ref("in", index, offset)


def Out(index: int, offset: int = 0) -> Ref:
    return Ref("out", index, offset)


def Ws(offset: int = 0) -> Ref:
    return Ref("ws", 0, offset)


@dataclass(frozen=True)
class KernelLaunch:
    """One launch of a compiled kernel. ``kernel`` names it (``file.cu:function``) for descriptions."""

    function: Any
    kernel: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    args: tuple[Any, ...]
    shared_mem: int = 0

    def __post_init__(self) -> None:
        gx, gy, gz = self.grid
        if gy > MAX_GRID_YZ or gz > MAX_GRID_YZ or gx > INT32_MAX or min(self.grid) < 1:
            raise ValueError(f"launch grid {self.grid} of {self.kernel} is outside CUDA's limits "
                             f"(1 <= x < 2^31, 1 <= y, z <= {MAX_GRID_YZ})")


@dataclass(frozen=True)
class GemmLaunch:
    """One ``cublasGemmStridedBatchedEx``, in cuBLAS's column-major terms: for each of ``batch`` products,
    C = alpha * op(A) @ op(B) + beta * C with op(A) m x k, op(B) k x n, C m x n. ``dtype`` is the element type
    of A, B and C; ``compute`` the accumulation: ``fp32`` (strict float32), ``tf32`` (tensor cores, float32
    accumulation) or ``fp64``."""

    transa: bool
    transb: bool
    m: int
    n: int
    k: int
    a: Any
    lda: int
    stride_a: int
    b: Any
    ldb: int
    stride_b: int
    c: Any
    ldc: int
    stride_c: int
    batch: int = 1
    alpha: float = 1.0
    beta: float = 0.0
    dtype: str = "float32"
    compute: str = "fp32"

    @property
    def kernel(self) -> str:
        return f"cublas:gemm_strided_batched[{self.dtype},{self.compute}]"


@dataclass(frozen=True)
class LtMatmulLaunch:
    """One ``cublasLtMatmul`` (``cublaslt.py``): the product ``gemm`` describes (its column-major terms: C = alpha
    * op(A) @ op(B) + beta * C), then the ``epilogue``: ``DEFAULT``, ``BIAS`` adds ``bias`` (a vector of m) to every
    column, ``RELU_BIAS`` then clamps at zero; run with exactly the algorithm ``algo`` records (``cublaslt.FIELDS``
    as sorted (name, value) pairs) and the ``workspace`` it was recorded with, carved from the layer's own."""

    gemm: GemmLaunch
    algo: tuple[tuple[str, Any], ...]
    workspace: Any
    epilogue: str = "DEFAULT"
    bias: Any = None

    @classmethod
    def of(cls, g: GemmLaunch, algo: Any, workspace: Any, epilogue: str = "DEFAULT",
           bias: Any = None) -> LtMatmulLaunch:
        """The matmul ``g`` describes, through cuBLASLt with the algorithm ``algo`` (a mapping of its fields)."""
        return cls(g, tuple(sorted(dict(algo).items())), workspace, epilogue, bias)

    @property
    def kernel(self) -> str:
        algo, g = dict(self.algo), self.gemm
        return (f"cublaslt:matmul[{g.dtype},{g.compute},{self.epilogue}] algo={algo.get('algo_id')} "
                f"tile={algo.get('tile')} stages={algo.get('stages')} split_k={algo.get('split_k')}")

    def line(self) -> str:
        g = self.gemm
        return f"{self.kernel} m={g.m} n={g.n} k={g.k} batch={g.batch}"

    @property
    def operands(self) -> tuple[Any, ...]:
        g = self.gemm
        return g.a, g.b, g.c, self.workspace, self.bias

    def bind_at(self, a: int, b: int, c: int, workspace: int, bias: int) -> BoundLaunch:
        return cublaslt.bind_matmul(self, a, b, c, workspace, bias)


@dataclass(frozen=True)
class CudnnSdpaLaunch:
    """One cuDNN SDPA forward (``cudnn_sdpa.py``): ``o`` = softmax(scale * ``q`` ``k``^T (+ ``bias``) (causal))
    ``v`` over contiguous [B, H, S, D] operands, as ``executable`` (a ``cudnn_sdpa.Executable``: the recorded engine
    configuration, rebuilt once when the layer was prepared) runs it, on ``workspace`` carved from the layer's own."""

    executable: Any
    q: Any
    k: Any
    v: Any
    o: Any
    workspace: Any
    bias: Any = None

    @property
    def kernel(self) -> str:
        return f"cudnn:sdpa[{self.executable.problem.dtype}] {self.executable.params['plan']}"

    def line(self) -> str:
        return f"{self.kernel} {self.executable.problem.describe()}"

    @property
    def operands(self) -> tuple[Any, ...]:
        return self.q, self.k, self.v, self.o, self.bias, self.workspace

    def bind_at(self, q: int, k: int, v: int, o: int, bias: int, workspace: int) -> BoundLaunch:
        return self.executable.bind(q, k, v, o, bias, workspace)


#: A vendor library's call in a :class:`LibraryLaunchPlan`: its ``operands`` (refs or held device arrays, None
#: for an absent one) are resolved to addresses, in that order, for its ``bind_at``.
LibraryLaunch = LtMatmulLaunch | CudnnSdpaLaunch


Launch = KernelLaunch | GemmLaunch


@dataclass(frozen=True)
class LaunchPlan:
    """A prepared layer as data: its launches in order, and the device arrays (weights) they use."""

    backend: Backend
    launches: tuple[Launch, ...]
    holds: tuple[Any, ...] = field(default=(), repr=False)

    def describe(self) -> list[str]:
        """One line per launch: what runs, with which grid (for ``inspect`` and the manifest's evidence)."""
        return [f"{x.kernel} grid={list(x.grid)} block={list(x.block)}" if isinstance(x, KernelLaunch)
                else f"{x.kernel} m={x.m} n={x.n} k={x.k} batch={x.batch}" for x in self.launches]

    def bind(self, inputs: Sequence[Any], outputs: Sequence[Any], workspace: Any, blas: Any) -> list[BoundLaunch]:
        """Resolve every ref against these device arrays: the launches, ready to replay on any stream."""
        def address(arg: Any) -> Any:
            if not isinstance(arg, Ref):
                return arg
            if arg.role == "ws":
                buffer = workspace
            else:
                pool = inputs if arg.role == "in" else outputs
                if arg.index >= len(pool):
                    raise ValueError(f"a launch names {arg.role}put {arg.index}; the layer has {len(pool)}")
                buffer = pool[arg.index]
            if buffer is None:
                raise ValueError(f"a launch names the {arg.role} buffer, which this run does not have")
            if arg.offset > buffer.nbytes:
                raise ValueError(f"a launch reads {arg.offset} bytes into a {buffer.nbytes}-byte buffer")
            return np.uint64(buffer.data.ptr + arg.offset)

        bound: list[BoundLaunch] = []
        for launch in self.launches:
            if isinstance(launch, KernelLaunch):
                args = tuple(address(a) for a in launch.args)
                bound.append(BoundKernel(launch.function, launch.grid, launch.block, args, launch.shared_mem))
            else:
                if blas is None:
                    raise ValueError("this plan calls cuBLAS and was bound without a cuBLAS handle")
                ptrs = tuple(int(address(x)) if isinstance(x, Ref) else int(x.data.ptr)
                             for x in (launch.a, launch.b, launch.c))
                bound.append(blas.bind_gemm(launch, *ptrs))
        return bound

    def __call__(self, inputs: Sequence[Any], outputs: Sequence[Any], workspace: Any) -> None:
        """Bind to these arrays and run on the backend's current stream (the builder's timing, tests)."""
        if not isinstance(self.backend, CudaBackend):
            raise TypeError(f"launch plans run on the cuda backend, not {self.backend.name}")
        stream = self.backend.current_stream()
        blas = self.backend.blas_handle(stream) if any(isinstance(x, GemmLaunch) for x in self.launches) else None
        for launch in self.bind(inputs, outputs, workspace, blas):
            launch(stream)


class LibraryLaunchPlan(LaunchPlan):
    """A launch plan with vendor library calls among its launches (:data:`LibraryLaunch`: cuBLASLt matmuls, cuDNN
    SDPA): the vendor tactics'. A subclass, so that :class:`LaunchPlan`'s code, which every other CUDA tactic's
    identity covers, is unchanged; each call's operands are resolved by the very code that resolves a kernel's
    arguments."""

    def describe(self) -> list[str]:
        return [x.line() if isinstance(x, LibraryLaunch) else LaunchPlan(self.backend, (x,)).describe()[0]
                for x in self.launches]

    def bind(self, inputs: Sequence[Any], outputs: Sequence[Any], workspace: Any, blas: Any) -> list[BoundLaunch]:
        bound: list[BoundLaunch] = []
        for launch in self.launches:
            if not isinstance(launch, LibraryLaunch):
                bound += LaunchPlan(self.backend, (launch,)).bind(inputs, outputs, workspace, blas)
                continue
            carrier = KernelLaunch(None, "library:operands", (1, 1, 1), (1, 1, 1), launch.operands)
            (resolved,) = LaunchPlan(self.backend, (carrier,)).bind(inputs, outputs, workspace, None)
            addresses = (0 if x is None else int(x) if isinstance(x, np.integer) else int(x.data.ptr)
                         for x in resolved.args)
            bound.append(launch.bind_at(*addresses))
        return bound


class BoundKernel:
    """A kernel launch with every argument resolved: calling it enqueues the kernel on ``stream``."""

    __slots__ = ("args", "block", "function", "grid", "shared_mem")

    def __init__(self, function: Any, grid: tuple[int, int, int], block: tuple[int, int, int],
                 args: tuple[Any, ...], shared_mem: int) -> None:
        self.function, self.grid, self.block, self.args, self.shared_mem = function, grid, block, args, shared_mem

    def __call__(self, stream: Any) -> None:
        self.function(self.grid, self.block, self.args, shared_mem=self.shared_mem, stream=stream)


def uses_library(plan: Any) -> bool:
    """Whether a prepared kernel calls cuBLAS (its context then needs a cuBLAS workspace)."""
    return isinstance(plan, LaunchPlan) and any(isinstance(x, GemmLaunch) for x in plan.launches)


def plan_timer(backend: CudaBackend, plan: LaunchPlan, inputs: Any, outputs: Any, workspace: Any, warmup: int,
               runs_per_sample: int) -> Callable[[int], list[int]]:
    """A launch plan is bound once, warmed up, and captured as a CUDA graph of ``runs_per_sample`` runs; each
    sample is that graph between two events (``CudaBackend.timer`` for a plan; here, beside the plan, since the
    backend is below this module)."""
    cp = backend.xp
    with backend.activate():
        stream = backend.current_stream()
        blas = backend.blas_handle(stream) if uses_library(plan) else None
        steps = plan.bind(inputs, outputs, workspace, blas)
        for _ in range(max(warmup, 1)):  # at least once, so that nothing lazy happens while capturing
            for step in steps:
                step(stream)
        graph = capture(stream, steps, runs_per_sample)
        graph.launch(stream)

    def sample(n: int) -> list[int]:
        with backend.activate():
            events = [(cp.cuda.Event(), cp.cuda.Event()) for _ in range(n)]
            for start, end in events:
                start.record(stream)
                graph.launch(stream)
                end.record(stream)
            stream.synchronize()
            return [round(cp.cuda.get_elapsed_time(s, e) * 1e6 / runs_per_sample) for s, e in events]

    return sample


def timer(backend: Backend, kernel: Callable[..., None], inputs: Any, outputs: Any, workspace: Any, warmup: int,
          runs_per_sample: int) -> Callable[[int], list[int]]:
    """How the builder times a candidate: a launch plan on CUDA as a captured graph (:func:`plan_timer`);
    anything else as a call between events or clock reads (``Backend.timer``)."""
    if isinstance(backend, CudaBackend) and isinstance(kernel, LaunchPlan):
        return plan_timer(backend, kernel, inputs, outputs, workspace, warmup, runs_per_sample)
    return backend.timer(kernel, inputs, outputs, workspace, warmup, runs_per_sample)

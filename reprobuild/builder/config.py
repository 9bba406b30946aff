"""The builder configuration (TensorRT's ``IBuilderConfig``) and the progress monitor interface.

"None means default": timing counts left as None take the backend's defaults, which the manifest then records
as the values actually used; ``max_memory`` left as None is the memory of the device (cuda) or host (cpu).

:func:`check_seed` is the one validator of seeds, shared by the config and the command line's seed options.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from reprobuild.core.errors import UsageError
from reprobuild.ir import OptimizationProfile
from reprobuild.manifest.models import MAX_SEED
from reprobuild.passes import DEFAULT_PASSES, PASSES, PRECISION_PASSES

if TYPE_CHECKING:
    from reprobuild.builder.selector import AlgorithmSelector
    from reprobuild.builder.timing_cache import TimingCache
    from reprobuild.manifest.models import BuildConfigRecord

TACTIC_SOURCES = ("builtin", "cublas", "cublaslt", "cudnn", "cupy", "numpy", "nvrtc")
#: The precision flags, as TensorRT's builder flags (fp32 strict is the default).
PRECISIONS = ("fp32", "tf32", "fp16", "bf16")

#: (warmup, iterations, runs per sample) per backend when the config leaves them unset. On CUDA each sample is a
#: captured graph of 5 back-to-back runs (TensorRT's avgTiming) between two events: no launch overhead in it.
DEFAULT_TIMING = {"cpu": (1, 5, 1), "cuda": (2, 7, 5)}
#: Candidates whose median is within this fraction of the fastest are near-ties, decided by preference order.
DEFAULT_TIE_BAND = 0.03


def check_seed(value: int, what: str) -> int:
    """``value`` if it is a valid seed: an integer in [0, 2**64) (NumPy's generators take no negative seed, and the
    manifest records seeds in that range); otherwise a :class:`UsageError` naming ``what`` (``"--seed"``)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{what} must be an integer from 0 to 2**64 - 1 ({MAX_SEED}); got {value!r}")
    if not 0 <= value <= MAX_SEED:
        why = "a seed is never negative" if value < 0 else "a seed fits in 64 bits"
        raise UsageError(f"{what} must be an integer from 0 to 2**64 - 1 ({MAX_SEED}); got {value}: {why}. Give "
                         "another seed (the default is 0)")
    return value


def check_max_memory(value: int | None, what: str) -> int | None:
    """``value`` if it is a valid memory cap: None (the device's or host's memory) or a positive byte count."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{what} must be a positive number of bytes (or unset for all of the device's or host's "
                         f"memory); got {value!r}")
    return value


class ProgressMonitor:
    """Receives build progress, as TensorRT's ``IProgressMonitor``. Return False from ``step_complete`` to cancel."""

    def phase_start(self, phase: str, parent: str | None, num_steps: int) -> None:
        return None

    def step_complete(self, phase: str, step: int, message: str) -> bool:
        return True

    def phase_finish(self, phase: str) -> None:
        return None


@dataclass
class BuilderConfig:
    """What a build may do. The fields above ``max_memory`` are recorded in the manifest's pinned config; those from
    it on (the memory cap, monitor, selector, timing cache) steer the build without being part of its identity."""

    backend: str = "auto"
    warmup: int | None = None
    iterations: int | None = None
    runs_per_sample: int | None = None
    seed: int = 0
    max_workspace_bytes: int = 1 << 30
    determinism: Literal["run_to_run", "any"] = "run_to_run"
    tactic_sources: tuple[str, ...] | None = None
    passes: tuple[str, ...] = DEFAULT_PASSES
    tie_band: float = DEFAULT_TIE_BAND
    #: TensorRT's builder flags: ``fp32`` (strict float32, the default), ``tf32`` (also TF32 tensor cores on
    #: float32 GEMMs and convolutions), ``fp16`` or ``bf16`` (layers that can run in float16 / bfloat16 do, with
    #: float32 accumulation; the engine's inputs and outputs keep their dtypes). Each layer's precision is a
    #: recorded decision.
    precision: Literal["fp32", "tf32", "fp16", "bf16"] = "fp32"
    #: Whether execution contexts capture their run into a CUDA graph on first use and replay it (cuda only;
    #: a context may still opt out).
    cuda_graph: bool = True
    #: The most memory, in bytes, the build may need at once (weights, activations, workspace, timing buffers; see
    #: ``Builder``): a build over it is refused with a ResourceError before any activation or timing buffer is
    #: allocated. None: the device's total memory (cuda); on cpu the host's physical memory or, when lower, this
    #: process's cgroup or address-space limit (``reprobuild.engine.host_memory``). Not recorded: it
    #: decides whether a build may run, never what it produces. The CLI's ``--max-memory``.
    max_memory: int | None = None
    #: The GPU a cuda build times and runs on (None: 0). Not recorded: GPUs of one model give the same engine, which
    #: a replay on another device checks.
    device: int | None = None
    progress_monitor: ProgressMonitor | None = field(default=None, repr=False)
    algorithm_selector: AlgorithmSelector | None = field(default=None, repr=False)
    timing_cache: TimingCache | None = field(default=None, repr=False)
    #: Optimization profiles, for a network with dynamic dimensions (at least one then; none for fixed shapes).
    profiles: list[OptimizationProfile] = field(default_factory=list)
    #: The shapes of each profile a candidate tactic is timed at ("opt", and "min" and/or "max" too): it is chosen
    #: by the sum of its medians there. Every candidate also runs at min and max (eligibility), timed or not.
    profile_timing: tuple[str, ...] = ("opt",)

    def add_optimization_profile(self, profile: OptimizationProfile) -> int:
        """Add a profile (TensorRT's ``IBuilderConfig.add_optimization_profile``); returns its index."""
        if not isinstance(profile, OptimizationProfile):
            raise UsageError(f"an optimization profile is a reprobuild.ir.OptimizationProfile; got "
                             f"{type(profile).__name__}")
        self.profiles.append(profile)
        return len(self.profiles) - 1

    @classmethod
    def from_record(cls, record: BuildConfigRecord) -> BuilderConfig:
        """The config a manifest records, ready to build with again."""
        return cls(
            backend=record.backend, warmup=record.timing.warmup, iterations=record.timing.iterations,
            runs_per_sample=record.timing.runs_per_sample,
            seed=record.seed, max_workspace_bytes=record.max_workspace_bytes, determinism=record.determinism,
            tactic_sources=tuple(record.tactic_sources) if record.tactic_sources is not None else None,
            passes=tuple(p.name for p in record.passes), tie_band=record.tie_band, precision=record.precision,
            cuda_graph=record.cuda_graph,
        )

    @property
    def effective_passes(self) -> tuple[str, ...]:
        """The passes a build runs: the configured ones, then the one the precision flag adds (a manifest records
        this list, so a config made from a record already ends with it)."""
        extra = PRECISION_PASSES.get(self.precision)
        return self.passes if extra is None or self.passes[-1:] == (extra,) else (*self.passes, extra)

    def timing_for(self, backend: str) -> tuple[int, int, int]:
        """(warmup, iterations, runs per sample) on ``backend``, defaults filled in."""
        warmup, iterations, runs = DEFAULT_TIMING[backend]
        return (warmup if self.warmup is None else self.warmup,
                iterations if self.iterations is None else self.iterations,
                runs if self.runs_per_sample is None else self.runs_per_sample)

    def validate(self) -> None:
        if "opt" not in self.profile_timing or set(self.profile_timing) - {"min", "opt", "max"} or \
                len(set(self.profile_timing)) != len(self.profile_timing):
            raise UsageError(f"profile_timing is opt and any of min and max, each once; got {self.profile_timing!r}")
        if self.backend not in ("auto", "cpu", "cuda"):
            raise UsageError(f"backend must be auto, cpu or cuda; got {self.backend!r}")
        if self.warmup is not None and self.warmup < 0:
            raise UsageError(f"warmup must be >= 0; got {self.warmup}")
        if self.iterations is not None and self.iterations < 1:
            raise UsageError(f"iterations must be >= 1; got {self.iterations}")
        if self.runs_per_sample is not None and self.runs_per_sample < 1:
            raise UsageError(f"runs_per_sample must be >= 1; got {self.runs_per_sample}")
        check_seed(self.seed, "seed")
        check_max_memory(self.max_memory, "max_memory (--max-memory)")
        if self.device is not None and (isinstance(self.device, bool) or not isinstance(self.device, int)
                                        or self.device < 0):
            raise UsageError(f"device must be a GPU index, 0 or more, or None; got {self.device!r}")
        if self.max_workspace_bytes < 0:
            raise UsageError(f"max_workspace_bytes must be >= 0; got {self.max_workspace_bytes}")
        if not 0.0 <= self.tie_band <= 1.0:
            raise UsageError(f"tie_band is a fraction between 0 and 1 (0.03 means 3%); got {self.tie_band}")
        if self.precision not in PRECISIONS:
            raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        if self.determinism not in ("run_to_run", "any"):
            raise UsageError(f"determinism must be run_to_run or any; got {self.determinism!r}")
        if self.tactic_sources is not None and not self.tactic_sources:
            raise UsageError(f"tactic_sources is empty, so no layer could have a tactic; give one or more of "
                             f"{', '.join(TACTIC_SOURCES)}, or None for all")
        unknown = sorted(set(self.tactic_sources or ()) - set(TACTIC_SOURCES))
        if unknown:
            raise UsageError(f"unknown tactic source(s) {unknown}; known: {', '.join(TACTIC_SOURCES)}")
        unknown = sorted(set(self.passes) - set(PASSES))
        if unknown:
            raise UsageError(f"unknown pass(es) {unknown}; known: {', '.join(sorted(PASSES))}")
        for flag, name in sorted(PRECISION_PASSES.items()):
            if name in self.passes and (self.precision != flag or self.passes[-1] != name):
                raise UsageError(f"pass {name} belongs to --precision {flag}, which adds it after every other pass; "
                                 f"leave it out of the pass list and set precision={flag!r}")

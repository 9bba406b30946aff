"""The build manifest, schema version 4 (pydantic v2, ``extra="forbid"`` everywhere).

Two parts. ``pinned`` is everything that decides the engine's bytes: model digest, build config, environment
fingerprint, the layers with their chosen tactics by value, each CUDA kernel symbol's source and cubin digests
with its compile options, memory figures. It is embedded in the engine, hashed, and what identity and diffs use;
it holds no timings, no clock readings and no floats except configuration values. ``evidence`` is how the choices
were made: every candidate's timing samples and why it won, lost or was excluded, with timestamps. ``engine`` names
the engine file the build wrote.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from reprobuild.core.validation import BoundedModel, FailFastDict, FailFastList

SCHEMA_VERSION = 4
#: Seeds (of the timing inputs and of the golden vectors) are integers in [0, MAX_SEED]: what NumPy's generators take.
MAX_SEED = 2**64 - 1

JsonScalar = int | str
AttrJson = int | str | FailFastList[int] | FailFastList[str]


class Strict(BoundedModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Tactic(Strict):
    family: str
    name: str
    version: int = Field(ge=1)
    parameters: FailFastDict[str, JsonScalar] = Field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.family}.{self.name} v{self.version}"


class TacticRef(_Tactic):
    """A tactic by value: (family, name, version, parameters) and ``code_sha256``."""

    code_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="the digest of exactly what the tactic runs: its normalized Python code (no docstrings or "
                    "comments) with every function, class, constant (arrays by dtype, shape and bytes) and op looked "
                    "up by name that it reaches, and the normalized source closure of each CUDA kernel symbol it "
                    "launches with the NVRTC options and defines (reprobuild.kernels.identity); the built-in "
                    "tactics' are committed in kernels/tactics.lock.json")

    @property
    def digest(self) -> str:
        return self.code_sha256


class LegacyTacticRef(_Tactic):
    """A tactic as schema 3 and older recorded it, kept as recorded when such a manifest is migrated:
    ``source_sha256`` was a digest of source text (docstrings, comments and whole ``.cu`` files included). It
    cannot be compared with a ``code_sha256``, so a replay refuses it, naming the tactic."""

    source_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @property
    def digest(self) -> str:
        return self.source_sha256


#: A recorded tactic: by ``code_sha256``, or, in a manifest migrated from schema 3 or older, by ``source_sha256``.
AnyTacticRef = TacticRef | LegacyTacticRef


class ModelRecord(Strict):
    sha256: str | None = Field(description="sha256 of the ONNX file's bytes; null for a network built in code")
    size_bytes: int | None = None
    structural_hash: str = Field(description="sha256 of the network after passes: ops, attrs, shapes, weights")
    opset: int | None = None
    ir_version: int | None = None
    producer: str | None = None
    graph_name: str | None = None
    upgraded_from_opset: int | None = Field(
        default=None, description="the model's own opset when it was older than 7 and upgraded with "
                                  "onnx.version_converter; null when it was not upgraded")


class TimingConfig(Strict):
    warmup: int = Field(ge=0, description="untimed runs of each candidate before timing")
    iterations: int = Field(ge=1, description="timing samples of each candidate; the median decides")
    runs_per_sample: int = Field(ge=1, description="back-to-back runs averaged into each sample")


class PassRecord(Strict):
    """A graph pass the build ran, in order, with the version of its code."""

    name: str
    version: int = Field(ge=1)


class BuildConfigRecord(Strict):
    backend: Literal["cpu", "cuda"]
    timing: TimingConfig
    seed: int = Field(ge=0, le=MAX_SEED, description="seed of the random inputs tactics are timed on")
    max_workspace_bytes: int = Field(ge=0)
    determinism: Literal["run_to_run", "any"]
    tactic_sources: FailFastList[str] | None = Field(description="allowed tactic sources; null allows all")
    passes: FailFastList[PassRecord]
    precision: Literal["fp32", "tf32", "fp16", "bf16"] = Field(
        description="the builder's precision flag: fp32 is strict float32; tf32 also allows TF32 tensor cores in "
                    "float32 GEMMs and convolutions; fp16 (bf16) runs the layers that can in float16 (bfloat16), "
                    "with float32 accumulation, the engine's inputs and outputs keeping their dtypes")
    cuda_graph: bool = Field(description="whether the build asked execution contexts to run as CUDA graphs")
    tie_band: float = Field(ge=0.0, le=1.0, description="candidates within this fraction of the fastest median "
                                                         "are near-ties, decided by preference order")


class TensorRecord(Strict):
    name: str
    shape: FailFastList[int]
    dtype: str


class PinnedInputRecord(TensorRecord):
    """A network input whose value was fixed at build time (TensorRT's shape-input values): the engine is
    only valid for that value, and the runtime refuses any other."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="array digest of the pinned value")


class LayerRecord(Strict):
    name: str
    op: str
    key: str = Field(description="structural key: signature (op, attrs, shapes, dtypes, weight digests) + "
                                 "occurrence; stable under renaming")
    attrs: FailFastDict[str, AttrJson]
    inputs: FailFastList[TensorRecord]
    outputs: FailFastList[TensorRecord]
    tactic: AnyTacticRef
    workspace_bytes: int = Field(ge=0)
    onnx_nodes: FailFastList[str] = Field(description="the ONNX nodes this layer computes (several after a fusion)")
    precision: str = Field(description="the arithmetic the chosen tactic computes in: fp32, tf32 (TF32 tensor "
                                       "cores on float32 tensors), fp16, bf16, fp64, or the integer/bool dtype")


class KernelSourceRecord(Strict):
    """One CUDA kernel symbol a chosen tactic launches, in one element type's build of its file."""

    file: str
    symbol: str = Field(description="the kernel's symbol (its extern \"C\" name)")
    dtype: str = Field(default="float32", description="the element type this build of the file is for (a file "
                                                      "written on dtype.cuh's elem_t has a float32, a float16 and a "
                                                      "bfloat16 build)")
    source_sha256: str = Field(pattern=r"^[0-9a-f]{64}$",
                               description="of the symbol's normalized source closure: the top-level code of the file "
                                           "and its headers that the symbol reaches (reprobuild.kernels.csource)")
    compile_options: list[str] = Field(default_factory=list, description="every NVRTC option, as compiled")
    cubin_sha256: str | None = Field(default=None, description="of the symbol's own sections of the compiled cubin "
                                                               "(.text, .nv.info, .nv.constant0, ... of its name; "
                                                               "reprobuild.kernels.cubin)")

    @property
    def label(self) -> str:
        return f"{self.file}:{self.symbol}" + ("" if self.dtype == "float32" else f" ({self.dtype})")

    @property
    def digest(self) -> str:
        return self.source_sha256


class LegacyKernelSourceRecord(Strict):
    """A compiled ``.cu`` file as schema 3 and older recorded it (a digest of the whole file and its headers, and
    of the whole cubin), kept as recorded when such a manifest is migrated."""

    file: str
    dtype: str = "float32"
    sha256: str = Field(description="of the file and the headers it includes")
    compile_options: FailFastList[str] = Field(default_factory=list)
    cubin_sha256: str | None = None

    @property
    def label(self) -> str:
        return self.file if self.dtype == "float32" else f"{self.file} ({self.dtype})"

    @property
    def digest(self) -> str:
        return self.sha256


class MemoryRecord(Strict):
    weights_bytes: int = Field(ge=0, description="persistent: constants held by the engine")
    activation_bytes: int = Field(ge=0, description="per context: activation arena after lifetime-based reuse")
    workspace_bytes: int = Field(ge=0, description="per context: the largest workspace of any chosen tactic")
    library_workspace_bytes: int = Field(ge=0, description="per context: the cuBLAS workspace of its own handle")
    context_bytes: int = Field(ge=0, description="per context: activation + workspace + cuBLAS workspace, one "
                                                 "allocation")
    unshared_activation_bytes: int = Field(ge=0, description="what activations would take with no reuse")


class DigestRecord(Strict):
    name: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class GoldenRecord(Strict):
    """What the engine computed, at build time, from inputs drawn with ``seed``: the digests ``reprobuild verify
    --against`` compares with, bit for bit, in another run, process or machine."""

    seed: int = Field(ge=0, le=MAX_SEED)
    inputs: FailFastList[DigestRecord] = Field(description="sha256 of each input drawn from the seed, to detect a "
                                                   "generator that draws differently")
    outputs: FailFastList[DigestRecord]
    layers: FailFastList[DigestRecord] = Field(description="per layer, in order, one digest over its outputs; what "
                                                   "names the first diverging layer")


class ExecutionRecord(Strict):
    """How execution contexts run the engine by default."""

    cuda_graph: bool = Field(description="contexts capture their run into a CUDA graph on first use and replay it")
    reason: str = Field(description="why (or why not)")


class ProfileRecord(Strict):
    """One optimization profile of a dynamic engine: each dynamic input's [min, opt, max] shape, and each layer's
    tactic (in the order of ``layers``), timed at opt and checked at min and max."""

    inputs: FailFastDict[str, FailFastList[FailFastList[int]]]
    tactics: FailFastList[TacticRef]


class DynamicRecord(Strict):
    """What a dynamic engine (built with optimization profiles) is over its whole range. The rest of the pinned
    record is the engine at profile 0's opt shapes; here are each dynamic dimension's range, the shape of every
    tensor that depends on one (canonical expressions such as ``batch*sequence``), and each profile."""

    symbols: FailFastDict[str, FailFastList[int]] = Field(description="each dynamic dimension's [lowest, highest]")
    shapes: FailFastDict[str, FailFastList[int | str]] = Field(
        description="tensor -> its shape over the range, a dynamic size as its expression")
    timing: FailFastList[Literal["min", "opt", "max"]] = Field(
        default_factory=lambda: ["opt"],  # type: ignore[arg-type]
        description="the shapes of each profile the candidates were timed at (their "
                                                     "medians summed); every candidate runs at min and max")
    profiles: FailFastList[ProfileRecord]


class Pinned(Strict):
    model: ModelRecord
    config: BuildConfigRecord
    environment: FailFastDict[str, str]
    inputs: FailFastList[TensorRecord]
    pinned_inputs: FailFastList[PinnedInputRecord] = Field(default_factory=list)
    outputs: FailFastList[TensorRecord]
    layers: FailFastList[LayerRecord]
    kernel_sources: FailFastList[KernelSourceRecord | LegacyKernelSourceRecord]
    memory: MemoryRecord
    execution: ExecutionRecord
    golden: GoldenRecord
    #: A dynamic engine's profiles and shapes over its range; absent (not written) for an engine of fixed shapes.
    dynamic: DynamicRecord | None = Field(default=None, exclude_if=lambda value: value is None)


class CandidateRecord(Strict):
    tactic: AnyTacticRef
    status: Literal["chosen", "lost", "excluded"]
    reason: str
    source: str
    determinism: str
    workspace_bytes: int = Field(ge=0)
    samples_ns: FailFastList[int] = Field(default_factory=list)
    median_ns: int | None = None
    timing_source: Literal["measured", "cache"] | None = Field(
        default=None, description="where the samples came from; null when the candidate was not timed")


class LayerEvidence(Strict):
    name: str
    key: str
    candidates: FailFastList[CandidateRecord]


class NonfiniteWeightRecord(Strict):
    """A constant of the engine holding NaN or infinite values, and how many of each."""

    name: str
    nan: int = Field(ge=0)
    posinf: int = Field(ge=0)
    neginf: int = Field(ge=0)


class MemoryReportRecord(Strict):
    """TensorRT's build-log memory lines, and the device's memory when the build started (``cudaMemGetInfo``)."""

    host_persistent_bytes: int = Field(ge=0, description="the engine file, which the runtime keeps in host memory")
    device_persistent_bytes: int = Field(ge=0, description="the weights on the GPU (0 on cpu)")
    scratch_bytes: int = Field(ge=0, description="each execution context's scratch memory (memory.context_bytes)")
    device_free_bytes: int | None = Field(default=None, ge=0, description="cudaMemGetInfo at the start; null on cpu")
    device_total_bytes: int | None = Field(default=None, ge=0, description="cudaMemGetInfo at the start; null on cpu")


class Evidence(Strict):
    started_at: str = Field(description="UTC, ISO 8601")
    wall_seconds: float
    backend_reason: str
    timing_clock: str
    selector: str = Field(description="the algorithm selector's class; ReplaySelector for --replay builds")
    tactics_timed: int = Field(description="tactic timings measured by this build (cache hits excluded)")
    timing_cache_hits: int = 0
    phase_seconds: FailFastDict[str, float] = Field(default_factory=dict, description="wall time of each build phase")
    layers: FailFastList[LayerEvidence]
    nonfinite_weights: FailFastList[NonfiniteWeightRecord] = Field(
        default_factory=list,
        description="the engine's constants that hold NaN or infinite values (the build warns of each), in name "
                    "order; empty when every weight is finite. Evidence, not pinned: the weights' bytes are already "
                    "pinned (through the model digest and the structural hash, which covers every weight's digest), "
                    "so this is an observation derived from them, not a decision of the build, and it leaves the "
                    "engine's identity and schema version unchanged")
    memory_report: MemoryReportRecord | None = Field(
        default=None, description="the build log's Total Host Persistent / Device Persistent / Scratch Memory lines "
                                  "and the device memory at the start of the build; null in manifests made before "
                                  "it was recorded. Evidence: derived from the pinned memory plan and the engine size")


class EngineRecord(Strict):
    sha256: str
    size_bytes: int
    format_version: int


class Manifest(Strict):
    schema_version: Literal[4] = 4
    pinned: Pinned
    evidence: Evidence | None = None
    engine: EngineRecord | None = None

    def pinned_json(self) -> dict[str, Any]:
        return self.pinned.model_dump(mode="json")

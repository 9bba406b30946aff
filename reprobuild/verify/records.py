"""What a determinism verification records and reports: the plan (``VerifyPlan``), one record per run
(``RunRecord``), a verdict per dimension (``Dimension``), what a device worker or Ray task computed
(``DeviceResult``) and how it compares (``DeviceVerdict``), and the report (``VerifyReport``). Pydantic models,
frozen and closed (unknown fields are refused), since worker processes and Ray tasks send them back as JSON.
``reprobuild.verify.run`` runs the plan and judges it; ``reprobuild.verify.devices`` compares devices."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from reprobuild.core.digest import array_digest, digest_of
from reprobuild.core.errors import UsageError


@dataclass(frozen=True)
class VerifyPlan:
    runs: int = 10
    contexts: int = 2
    threads: int = 1
    streams: int = 1
    processes: int = 1
    batch_invariance: bool = True
    #: Traced runs comparing every layer's outputs, not only the engine's: a layer that computes different bits
    #: fails verification even when later layers hide it (a saturated softmax, a ReLU), since other inputs may not.
    traced_runs: int = 3

    def validate(self) -> None:
        for name in ("runs", "threads", "streams", "processes"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name} must be at least 1; got {getattr(self, name)}")
        if self.contexts < 0 or self.traced_runs < 0:
            raise UsageError(f"--contexts and --traced-runs must be at least 0; got {self.contexts}, "
                             f"{self.traced_runs}")

    @property
    def runs_per_process(self) -> int:
        return self.threads * self.streams * self.runs + self.contexts

    @property
    def total_runs(self) -> int:
        return self.processes * self.runs_per_process


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunRecord(_Model):
    process: int
    context: str  #: "fresh<k>" or "t<thread>s<stream>"
    thread: int  #: -1 for the fresh contexts
    stream: int
    run: int
    digest: str  #: one digest over every output
    outputs: dict[str, str]  #: per output, sha256 over dtype, shape and bytes


class Dimension(_Model):
    name: str
    tested: bool
    identical: bool | None
    detail: str


class LayerDivergence(_Model):
    index: int
    name: str
    op: str
    tactic: str
    max_abs: float | None = None
    max_ulp: int | None = None
    differing: int | None = None
    total: int | None = None


class Locator(_Model):
    reproduced: bool
    detail: str
    layer: LayerDivergence | None = None


class NonFinite(_Model):
    """An output holding NaN or infinite values: bitwise-repeatable, so deterministic, but rarely meant."""

    output: str
    nan: int
    posinf: int
    neginf: int
    total: int

    @property
    def text(self) -> str:
        parts = [f"{n} {what}" for n, what in ((self.nan, "NaN"), (self.posinf, "+inf"), (self.neginf, "-inf")) if n]
        return f"{self.output} has {', '.join(parts)} of {self.total} elements"


def nonfinite_outputs(outputs: Mapping[str, Any]) -> list[NonFinite]:
    """The floating-point outputs that hold NaN or infinities, with the counts (integer outputs never do)."""
    found = []
    for name, value in outputs.items():
        array = np.asarray(value)
        if array.dtype.kind != "f" and "float" not in array.dtype.name:  # ml_dtypes' bfloat16, float8: kind 'V'
            continue
        wide = array if array.dtype == np.float64 else array.astype(np.float64)
        nan = int(np.count_nonzero(np.isnan(wide)))
        posinf = int(np.count_nonzero(np.isposinf(wide)))
        neginf = int(np.count_nonzero(np.isneginf(wide)))
        if nan or posinf or neginf:
            found.append(NonFinite(output=name, nan=nan, posinf=posinf, neginf=neginf, total=int(array.size)))
    return found


class DeviceResult(_Model):
    """What one device worker computed on the shared inputs: a process on one GPU (``--devices``) or a Ray task
    (``--ray``). Only digests travel; the worker's host name is for display and is never compared."""

    label: str  #: how reports name it: "GPU 1", "cpu", "task 0 (node gpu-a, GPU 3)"
    device: int | None  #: the GPU index (on its node, for a Ray task); None on the cpu backend
    task: int | None = None  #: the Ray task's index; None for a local device worker
    node: str = ""  #: the host name, for display only
    where: str  #: what tells devices apart: "gpu1" locally, "<Ray node id>/gpu3" on Ray, "/cpu" for a host's cpu
    fingerprint: dict[str, str]  #: the environment fingerprint of its backend (GPU model, versions, env vars)
    runs: list[str] = Field(min_length=1)  #: the digest of each run on one context, in order
    fresh: list[str]  #: the digest of one run on each fresh context
    outputs: dict[str, str]  #: per output, the digest of the first run
    layers: list[str]  #: every layer's digest, from the first traced run
    traced_runs: int
    layers_differ_at: int | None = None  #: the first layer at which its own traced runs disagree; None: none
    env: dict[str, str]  #: ``MULTI_DEVICE_ENV`` as the worker saw it
    nonfinite: list[NonFinite] = Field(default_factory=list)  #: of its first run's outputs


class DeviceVerdict(_Model):
    """One device worker or Ray task in the report: what it computed and how that compares."""

    label: str
    device: int | None
    task: int | None = None
    node: str = ""
    hardware: str  #: the GPU model and compute capability (the CPU model on cpu): devices compare within one
    digest: str  #: the digest over every output of its first run
    outputs: dict[str, str]
    repeatable: bool  #: its own runs, fresh contexts and traced runs agreed
    #: Same bits (outputs and every layer) as the reference of its model; None: nothing of its model to compare
    identical: bool | None
    reference: bool  #: the reference of its model: the result most of that model's devices share (ties: the first)
    first_layer: LayerDivergence | None = None  #: the first layer whose digest differs from the reference's
    environment_differences: list[str] = Field(default_factory=list)  #: "field: reference's -> its own"
    detail: str


class FleetRecord(_Model):
    """Where a fleet verification ran: the Ray address given (``local`` or a cluster's), the tasks, Ray's version."""

    address: str
    tasks: int
    ray: str


class VerifyReport(_Model):
    engine_sha256: str
    backend: str
    plan: dict[str, Any]
    inputs: str
    dimensions: list[Dimension]
    tier: str
    deterministic: bool
    batch_invariant: bool | None
    batch_detail: str
    reference: dict[str, str]
    total_runs: int
    seconds: float
    runs_per_second: float
    distinct_results: int
    locator: Locator | None = None
    against: dict[str, Any] | None = None
    #: Outputs with NaN or infinite values: identical bits every run still verify as deterministic (``verify``
    #: warns; ``--fail-on-nonfinite`` fails with exit code 11).
    nonfinite: list[NonFinite] = Field(default_factory=list)
    #: One entry per device worker (``--devices``) or Ray task (``--ray``), in device or task order; empty without.
    devices: list[DeviceVerdict] = Field(default_factory=list)
    #: Where the Ray tasks ran (``--ray``): the address given, the task count, Ray's version; None without.
    fleet: FleetRecord | None = None

class AgainstResult(_Model):
    matched: bool
    tier: str
    detail: str
    outputs: dict[str, str]  #: output -> "identical" or "differs"
    environment_differences: list[str]
    #: The fields where the manifest's pinned part differs from the one the engine embeds (the first
    #: ``tamper.MAX_LISTED``, then a count): for the engine's own manifest an edit, for another build's what differs.
    record_differences: list[str] = Field(default_factory=list)


def output_digests(outputs: Mapping[str, np.ndarray]) -> tuple[str, dict[str, str]]:
    """One digest over every output, and each output's own (sha256 over dtype, shape and bytes)."""
    per_output = {name: array_digest(value) for name, value in outputs.items()}
    return digest_of(per_output), per_output


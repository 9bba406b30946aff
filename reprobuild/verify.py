"""Determinism verification: the same inputs through repeated runs, fresh contexts, threads, streams and
processes, every output's sha256 compared; the verdict per dimension and the determinism tier reached.

The plan, per process: ``contexts`` fresh contexts made one after another, one run each; then ``threads``
threads, each with ``streams`` contexts of its own (one stream each), each thread enqueuing one run on all of
its contexts before waiting for them, ``runs`` times. ``processes - 1`` worker processes (``python -m
reprobuild.verify``) run the same plan on the same engine file and inputs at the same time. Total runs:
``processes * (threads * streams * runs + contexts)``.

Tiers, in order (DESIGN.md): run_to_run (same context) < cross_context (contexts, threads and streams) <
cross_process < cross_device (devices of one GPU model: ``devices`` runs one worker process per GPU, and
``reprobuild.fleet`` one Ray task per GPU of a cluster; ``--against`` a manifest from another machine shows it
too). batch_invariant (a sample's result does not depend on the batch it rides in) is reported separately.

Devices of different GPU models are never compared bitwise: bitwise identity is promised within one model only, so
each model's devices are compared among themselves, and a model with one device leaves cross_device untested
("not comparable"), never failed and never passed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from reprobuild.digest import array_digest, digest_of
from reprobuild.engine import Engine, Runtime
from reprobuild.errors import UsageError
from reprobuild.kernels.backend import MULTI_DEVICE_ENV

TIERS = ("run_to_run", "cross_context", "cross_process", "cross_device")


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


Progress = Callable[[int], None]


def _digests(outputs: Mapping[str, np.ndarray]) -> tuple[str, dict[str, str]]:
    per_output = {name: array_digest(value) for name, value in outputs.items()}
    return digest_of(per_output), per_output


def run_plan(engine: Engine, inputs: Mapping[str, np.ndarray], plan: VerifyPlan, process: int = 0,
             progress: Progress | None = None) -> list[RunRecord]:
    """This process's share of the plan; every run's output digests."""
    advance = progress or (lambda n: None)
    records: list[RunRecord] = []
    lock = threading.Lock()

    def record(context: str, thread: int, stream: int, run: int, outputs: Mapping[str, np.ndarray]) -> None:
        digest, per_output = _digests(outputs)
        with lock:
            records.append(RunRecord(process=process, context=context, thread=thread, stream=stream, run=run,
                                     digest=digest, outputs=per_output))

    for k in range(plan.contexts):
        record(f"fresh{k}", -1, 0, 0, engine.create_execution_context().execute(inputs))
        advance(1)
    errors: list[BaseException] = []

    def work(thread: int) -> None:
        try:
            contexts = [engine.create_execution_context() for _ in range(plan.streams)]
            for run in range(plan.runs):
                pending = [c.enqueue(inputs) for c in contexts]  # every stream busy before any is waited for
                for stream, (context, outputs) in enumerate(zip(contexts, pending)):
                    record(f"t{thread}s{stream}", thread, stream, run, context.to_host(outputs))
                advance(plan.streams)
        except BaseException as exc:  # re-raised in the calling thread
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,), name=f"verify-{t}") for t in range(plan.threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]
    return sorted(records, key=lambda r: (r.process, r.thread, r.stream, r.context, r.run))


def _distinct(records: list[RunRecord], key: Callable[[RunRecord], Any]) -> dict[Any, set[str]]:
    groups: dict[Any, set[str]] = {}
    for r in records:
        groups.setdefault(key(r), set()).add(r.digest)
    return groups


def judge(records: list[RunRecord], plan: VerifyPlan, backend: str) -> list[Dimension]:
    """The verdict of each dimension, from every run's digest."""
    dims = []
    by_context = _distinct(records, lambda r: (r.process, r.context))
    repeated = plan.runs >= 2
    bad = [k for k, v in by_context.items() if len(v) > 1]
    dims.append(Dimension(
        name="run_to_run", tested=repeated, identical=not bad if repeated else None,
        detail=(f"{plan.runs} runs in each of {plan.threads * plan.streams} context(s) per process: "
                + (f"{len(bad)} context(s) gave more than one result" if bad else "one result each"))
        if repeated else "--runs 1: each context ran once"))

    def across(name: str, tested: bool, members: Callable[[RunRecord], bool], within: Callable[[RunRecord], Any],
               what: str, untested: str) -> Dimension:
        """Compare the first runs of the ``members`` contexts, grouped by ``within`` (a process, a thread)."""
        if not tested:
            return Dimension(name=name, tested=False, identical=None, detail=untested)
        compared = [r for r in records if r.run == 0 and members(r)]
        distinct = max(len(v) for v in _distinct(compared, within).values())
        per_process = len(compared) // plan.processes
        return Dimension(name=name, tested=True, identical=distinct == 1,
                         detail=f"{per_process} {what} per process: {distinct} distinct result(s)")

    dims.append(across("cross_context", plan.contexts >= 1,
                       lambda r: r.thread < 0 or (r.thread, r.stream) == (0, 0), lambda r: r.process,
                       "contexts made one after another", "fewer than 2 contexts (use --contexts)"))
    dims.append(across("cross_thread", plan.threads >= 2, lambda r: r.thread >= 0 and r.stream == 0,
                       lambda r: r.process, "threads, each with its own context", "--threads 1"))
    streams_apply = backend == "cuda"
    dims.append(across("cross_stream", streams_apply and plan.streams >= 2, lambda r: r.thread >= 0,
                       lambda r: (r.process, r.thread), "contexts on concurrent streams",
                       "--streams 1" if streams_apply else "the cpu backend has no streams"))
    if plan.processes >= 2:
        per_process = _distinct(records, lambda r: r.process)
        firsts = {p: min((r for r in records if r.process == p), key=lambda r: (r.thread, r.stream, r.run)).digest
                  for p in per_process}
        distinct = len(set(firsts.values()))
        dims.append(Dimension(name="cross_process", tested=True, identical=distinct == 1,
                              detail=f"{plan.processes} processes: {distinct} distinct result(s)"))
    else:
        dims.append(Dimension(name="cross_process", tested=False, identical=None, detail="--processes 1"))
    dims.append(Dimension(name="cross_device", tested=False, identical=None,
                          detail="needs --against a manifest built on another machine of the same GPU model"))
    return dims


def tier_reached(dims: list[Dimension]) -> str:
    """The highest tier whose dimensions, and those of every lower tier, were tested and held."""
    by = {d.name: d for d in dims}
    groups = {"run_to_run": ["run_to_run", "layer_outputs"],
              "cross_context": ["cross_context", "cross_thread", "cross_stream"],
              "cross_process": ["cross_process"], "cross_device": ["cross_device"]}
    reached = "none"
    for tier in TIERS:
        members = [by[n] for n in groups[tier] if n in by]
        if not any(d.tested for d in members) or any(d.tested and not d.identical for d in members):
            break
        reached = tier
    return reached


def layer_outputs(engine: Engine, inputs: Mapping[str, np.ndarray], traced_runs: int) -> Dimension:
    """Do repeated traced runs on one context agree on every layer's outputs, not only the engine's?"""
    from reprobuild.engine.golden import layer_digests

    if traced_runs < 2:
        return Dimension(name="layer_outputs", tested=False, identical=None,
                         detail=f"--traced-runs {traced_runs}: needs 2 or more")
    context = engine.create_execution_context()
    runs = [layer_digests(context.execute_traced(inputs)[1]) for _ in range(traced_runs)]
    differing = [i for i in range(len(runs[0])) if len({r[i] for r in runs}) > 1]
    if not differing:
        return Dimension(name="layer_outputs", tested=True, identical=True,
                         detail=f"{traced_runs} traced runs: every layer's outputs identical")
    first = engine.layers[differing[0]]
    return Dimension(name="layer_outputs", tested=True, identical=False,
                     detail=f"{traced_runs} traced runs: {len(differing)} layer(s) differ, first {first.name!r} "
                            f"({first.op}, {first.tactic.label})")


def batch_invariance(engine: Engine, inputs: Mapping[str, np.ndarray],
                     rng: np.random.Generator) -> tuple[bool | None, str]:
    """Does sample 0's result stay the same when the other samples of its batch change, and when it moves?"""
    batch = {b.shape[0] if b.shape else 0 for b in (*engine.inputs, *engine.outputs)}
    if len(batch) != 1 or next(iter(batch)) < 2:
        return None, "not applicable: the bindings do not share a batch dimension of 2 or more"
    context = engine.create_execution_context()
    reference = context.execute(inputs)
    others = {k: v.copy() for k, v in inputs.items()}
    for v in others.values():
        v[1:] = rng.standard_normal(v[1:].shape).astype(v.dtype)
    moved = {k: np.roll(v, 1, axis=0) for k, v in inputs.items()}  # sample 0 rides at position 1
    with_others, shifted = context.execute(others), context.execute(moved)
    changed = [n for n in reference if with_others[n][0].tobytes() != reference[n][0].tobytes()]
    shifted_bad = [n for n in reference if shifted[n][1].tobytes() != reference[n][0].tobytes()]
    if changed or shifted_bad:
        return False, (f"sample 0 changes with its batch-mates in {changed}" if changed else
                       f"sample 0 changes with its position in the batch in {shifted_bad}")
    return True, "sample 0 gave identical bits with other batch-mates and at another position"


# --- several devices: one worker per GPU (or Ray task), compared bit for bit -------------------------------

#: A layer as reports name it: (name, op, tactic label).
LayerRef = tuple[str, str, str]


def engine_layer_refs(engine: Engine) -> list[LayerRef]:
    return [(layer.name, layer.op, layer.tactic.label) for layer in engine.layers]


def device_run(engine_bytes: bytes, inputs: Mapping[str, np.ndarray], device: int | None, runs: int = 3,
               contexts: int = 1, traced_runs: int = 1, max_memory: int | None = None) -> DeviceResult:
    """One device worker's share, in the process that calls it: ``runs`` runs on one context, one run on each of
    ``contexts`` fresh contexts, and ``traced_runs`` (at least 1) traced runs for every layer's digest, all on the
    same inputs. ``--devices`` runs it in one process per GPU, ``reprobuild.fleet`` in one Ray task per GPU."""
    from reprobuild.engine.golden import layer_digests
    from reprobuild.environment import environment_fingerprint

    if runs < 1 or contexts < 0 or traced_runs < 1:
        raise UsageError(f"a device worker needs runs >= 1, contexts >= 0, traced_runs >= 1; got {runs}, "
                         f"{contexts}, {traced_runs}")
    engine = Runtime(max_memory=max_memory, device=device).deserialize_engine(engine_bytes)
    feeds = {k: np.array(v) for k, v in inputs.items()}  # writable copies: Ray hands out read-only arrays
    context = engine.create_execution_context()
    results = context.execute(feeds)
    first, outputs = _digests(results)
    nonfinite = nonfinite_outputs(results)
    digests = [first] + [_digests(context.execute(feeds))[0] for _ in range(runs - 1)]
    fresh = [_digests(engine.create_execution_context().execute(feeds))[0] for _ in range(contexts)]
    tracer = engine.create_execution_context()
    traced = [layer_digests(tracer.execute_traced(feeds)[1]) for _ in range(traced_runs)]
    differ = next((i for i in range(len(traced[0])) if len({t[i] for t in traced}) > 1), None)
    index: int | None = getattr(engine.backend, "device_id", None) if engine.backend.name == "cuda" else None
    return DeviceResult(
        label="cpu" if index is None else f"GPU {index}", device=index,
        where="/cpu" if index is None else f"gpu{index}", fingerprint=environment_fingerprint(engine.backend),
        runs=digests, fresh=fresh, outputs=outputs, layers=traced[0], traced_runs=traced_runs,
        layers_differ_at=differ, env={k: os.environ.get(k, "<unset>") for k in MULTI_DEVICE_ENV},
        nonfinite=nonfinite)


def hardware_model(fingerprint: Mapping[str, str]) -> str:
    """What must be the same for two devices' bits to be comparable: the GPU model and compute capability (on
    cpu, the CPU model)."""
    if fingerprint.get("backend") == "cuda":
        return (f"{fingerprint.get('gpu.name', 'unknown GPU')} (compute capability "
                f"{fingerprint.get('gpu.compute_capability', '?')})")
    return f"cpu {fingerprint.get('cpu.model', 'unknown')}"


def _result_key(r: DeviceResult) -> tuple[str, tuple[str, ...]]:
    return r.runs[0], tuple(r.layers)


def _own_problem(r: DeviceResult) -> str:
    """Why a worker's own runs disagree with each other ("" when they agree)."""
    problems = []
    if len(set(r.runs)) > 1:
        problems.append(f"its {len(r.runs)} runs on one context gave {len(set(r.runs))} distinct results")
    if any(d != r.runs[0] for d in r.fresh):
        problems.append("a fresh context gave other bits than its first run")
    if r.layers_differ_at is not None:
        problems.append(f"its {r.traced_runs} traced runs first disagree at layer {r.layers_differ_at}")
    return "; ".join(problems)


def _verdict(r: DeviceResult, ref: DeviceResult, group: int, agreeing: int,
             layers: Sequence[LayerRef]) -> DeviceVerdict:
    own = _own_problem(r)
    first_layer, identical = None, _result_key(r) == _result_key(ref)
    env = [f"{k}: {ref.fingerprint.get(k, '<missing>')} -> {r.fingerprint.get(k, '<missing>')}"
           for k in sorted(set(r.fingerprint) | set(ref.fingerprint)) if r.fingerprint.get(k) != ref.fingerprint.get(k)]
    if group < 2:
        detail = "the only one of its model: nothing to compare its bits with"
    elif r is ref:
        detail = f"reference of its model: {agreeing} of {group} agree"
    elif identical:
        detail = f"identical to {ref.label}"
    else:
        index = next((i for i, (a, b) in enumerate(zip(r.layers, ref.layers)) if a != b), None)
        if index is None and len(r.layers) != len(ref.layers):
            index = min(len(r.layers), len(ref.layers))
        if index is not None and index < len(layers):
            name, op, tactic = layers[index]
            first_layer = LayerDivergence(index=index, name=name, op=op, tactic=tactic)
            detail = f"differs from {ref.label}: first at layer {index} {name!r} ({op}, {tactic})"
        elif index is not None:
            detail = (f"differs from {ref.label}: its traced run has {len(r.layers)} layer digests, the engine "
                      f"{len(layers)} layers (a result from another engine?)")
        else:
            detail = (f"differs from {ref.label} in its outputs, while every layer of its traced run matches: its "
                      "plain runs and its traced run disagree")
    if own:
        detail += f"; {own}"
    return DeviceVerdict(label=r.label, device=r.device, task=r.task, node=r.node,
                         hardware=hardware_model(r.fingerprint), digest=r.runs[0], outputs=r.outputs,
                         repeatable=not own, identical=identical if group >= 2 else None, reference=r is ref,
                         first_layer=first_layer, environment_differences=env, detail=detail)


def compare_devices(results: Sequence[DeviceResult], layers: Sequence[LayerRef]) -> tuple[Dimension,
                                                                                          list[DeviceVerdict]]:
    """The cross_device dimension and one verdict per result, from the results alone (no device is touched).

    Results are grouped by GPU model (``hardware_model``); within a model, the reference is the result most of
    its workers share (ties: the first), and every other result is identical to it or named with the first layer
    whose digest differs. cross_device is tested when some model has two or more distinct devices (``where``);
    devices of different models are never compared bitwise, so a model with one device is "not comparable"."""
    groups: dict[str, list[DeviceResult]] = {}
    for r in results:
        groups.setdefault(hardware_model(r.fingerprint), []).append(r)
    verdicts: dict[int, DeviceVerdict] = {}
    compared: list[str] = []
    for model, members in groups.items():
        keys = [_result_key(r) for r in members]
        best = max(keys, key=lambda k: (keys.count(k), -keys.index(k)))
        ref = members[keys.index(best)]
        for r in members:
            verdicts[id(r)] = _verdict(r, ref, len(members), keys.count(best), layers)
        if len({r.where for r in members}) >= 2:
            compared.append(model)
    ordered = [verdicts[id(r)] for r in results]
    lone = [f"{v.label} ({v.hardware})" for v in ordered if v.hardware not in compared]
    if not compared:
        if len(groups) > 1:
            listing = "; ".join(f"{model}: {', '.join(r.label for r in members)}" for model, members in groups.items())
            detail = (f"not comparable: the devices are of {len(groups)} models ({listing}); bits are promised "
                      "identical only between devices of one model, so list devices of one model")
        else:
            detail = (f"{len({r.where for r in results})} device(s): cross_device needs two or more devices of one "
                      "model")
        return Dimension(name="cross_device", tested=False, identical=None, detail=detail), ordered
    checked = [v for v in ordered if v.hardware in compared]
    bad = [v for v in checked if v.identical is False or not v.repeatable]
    devices = len({r.where for r in results if hardware_model(r.fingerprint) in compared})
    models = compared[0] if len(compared) == 1 else f"{len(compared)} models, each compared within itself"
    detail = (f"{devices} devices of {models}: " + (f"{len(bad)} of {len(checked)} differ; first {bad[0].label}: "
                                                    f"{bad[0].detail}" if bad else "identical bits"))
    if lone:
        detail += f"; not comparable with them (no other device of their model): {', '.join(lone)}"
    return Dimension(name="cross_device", tested=True, identical=not bad, detail=detail), ordered


def _spawn_device_workers(engine_path: str, inputs_path: str, devices: Sequence[int], plan: VerifyPlan,
                          max_memory: int | None = None) -> list[tuple[int, subprocess.Popen[str]]]:
    """One ``device_run`` worker process per device, all at once, with ``MULTI_DEVICE_ENV`` set."""
    env = {**os.environ, **MULTI_DEVICE_ENV}
    spawned = []
    for d in devices:
        spec = json.dumps({"device": d, "runs": plan.runs, "contexts": plan.contexts,
                           "traced_runs": max(1, plan.traced_runs), "max_memory": max_memory})
        spawned.append((d, subprocess.Popen([sys.executable, "-m", "reprobuild.verify", engine_path, inputs_path,
                                             spec, f"device{d}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                            text=True, env=env)))
    return spawned


def _collect_devices(workers: list[tuple[int, subprocess.Popen[str]]]) -> list[DeviceResult]:
    results = []
    for device, w in workers:
        out, err = w.communicate()
        lines = [line for line in out.splitlines() if line.strip()]
        if w.returncode != 0 or not lines:
            raise UsageError(f"the verify worker process for device {device} failed (exit {w.returncode}) with no "
                             f"result:\n{err.strip()}")
        results.append(DeviceResult.model_validate_json(lines[-1]))
    return results


def _with_devices(dims: list[Dimension], records: list[RunRecord], results: list[DeviceResult], engine: Engine
                  ) -> tuple[list[Dimension], list[DeviceVerdict]]:
    """``judge``'s dimensions with cross_device from the device workers; with --processes 1, cross_process from
    the device worker on this process's own device (another process, the same device)."""
    cross_device, verdicts = compare_devices(results, engine_layer_refs(engine))
    mine = getattr(engine.backend, "device_id", None) if engine.backend.name == "cuda" else None
    same = [r for r in results if r.device == mine]
    out = []
    for d in dims:
        if d.name == "cross_device":
            d = cross_device
        elif d.name == "cross_process" and not d.tested and same:
            distinct = len({records[0].digest, *(r.runs[0] for r in same)})
            d = Dimension(name="cross_process", tested=True, identical=distinct == 1,
                          detail=f"this process and the device worker process on {same[0].label}: {distinct} "
                                 "distinct result(s)")
        out.append(d)
    return out, verdicts


# --- worker processes --------------------------------------------------------------------------------------


def _spawn_workers(engine_path: str, inputs_path: str, plan: VerifyPlan,
                   max_memory: int | None = None) -> list[subprocess.Popen[str]]:
    spec = json.dumps({"runs": plan.runs, "contexts": plan.contexts, "threads": plan.threads,
                       "streams": plan.streams, "max_memory": max_memory})
    return [subprocess.Popen([sys.executable, "-m", "reprobuild.verify", engine_path, inputs_path, spec, str(p)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for p in range(1, plan.processes)]


def _collect(workers: list[subprocess.Popen[str]]) -> list[RunRecord]:
    records = []
    for w in workers:
        out, err = w.communicate()
        if w.returncode != 0:
            raise UsageError(f"a verify worker process failed (exit {w.returncode}):\n{err.strip()}")
        records += [RunRecord.model_validate_json(line) for line in out.splitlines() if line.strip()]
    return records


def _worker_main(argv: list[str]) -> int:
    """A worker process: this process's share of the plan (one RunRecord per line), or, with a "device" in the
    spec, ``device_run`` on that device (one DeviceResult line)."""
    engine_path, inputs_path, spec, process = argv
    settings = json.loads(spec)
    max_memory = settings.pop("max_memory", None)
    with open(engine_path, "rb") as f:
        data = f.read()
    with np.load(inputs_path, allow_pickle=False) as npz:
        inputs = {k: npz[k] for k in npz.files}
    if "device" in settings:
        print(device_run(data, inputs, max_memory=max_memory, **settings).model_dump_json())
        return 0
    engine = Runtime(max_memory=max_memory).deserialize_engine(data)
    plan = VerifyPlan(**settings, processes=1, batch_invariance=False)
    for record in run_plan(engine, inputs, plan, process=int(process)):
        print(record.model_dump_json())
    return 0


def verify(engine: Engine, inputs: Mapping[str, np.ndarray], plan: VerifyPlan, inputs_label: str = "",
           progress: Progress | None = None, seed: int = 0, max_memory: int | None = None,
           devices: Sequence[int] | None = None) -> VerifyReport:
    """Run the whole plan (worker processes included) and judge it. ``max_memory`` is the worker processes'
    memory cap (``Runtime(max_memory=...)``; None: theirs by default); this process's is ``engine``'s own.
    ``devices`` (GPU indices, ``resolve_devices``): also one ``device_run`` worker process per device, at the same
    time, compared by ``compare_devices`` for the cross_device dimension; None: no device workers."""
    plan.validate()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="reprobuild-verify-") as tmp:
        workers: list[subprocess.Popen[str]] = []
        device_workers: list[tuple[int, subprocess.Popen[str]]] = []
        if plan.processes > 1 or devices:
            engine_path, inputs_path = os.path.join(tmp, "engine"), os.path.join(tmp, "inputs.npz")
            with open(engine_path, "wb") as f:
                f.write(engine.serialize())
            save_npz: Any = np.savez  # numpy's stub types **kwds as if they were allow_pickle
            save_npz(inputs_path, **{k: np.asarray(v) for k, v in inputs.items()})
            workers = _spawn_workers(engine_path, inputs_path, plan, max_memory) if plan.processes > 1 else []
            device_workers = _spawn_device_workers(engine_path, inputs_path, devices or (), plan, max_memory)
        try:
            records = run_plan(engine, inputs, plan, 0, progress)
            records += _collect(workers)
            if progress is not None:
                progress(plan.runs_per_process * (plan.processes - 1))
            results = _collect_devices(device_workers)
        except BaseException:  # no worker outlives the files it reads
            for w in (*workers, *(p for _, p in device_workers)):
                if w.poll() is None:
                    w.kill()
                    w.wait()
            raise
    seconds = time.perf_counter() - started
    dims = judge(records, plan, engine.backend.name)
    dims.insert(1, layer_outputs(engine, inputs, plan.traced_runs))
    verdicts: list[DeviceVerdict] = []
    if results:
        dims, verdicts = _with_devices(dims, records, results, engine)
    total = len(records) + sum(len(r.runs) + len(r.fresh) for r in results)
    batch_ok, batch_detail = (batch_invariance(engine, inputs, np.random.default_rng(seed + 1))
                              if plan.batch_invariance else (None, "not tested"))
    deterministic = all(d.identical for d in dims if d.tested)
    nonfinite = nonfinite_outputs(engine.create_execution_context().execute(inputs))
    return VerifyReport(
        engine_sha256=engine.sha256, backend=engine.backend.name, plan=plan.__dict__, inputs=inputs_label,
        dimensions=dims, tier=tier_reached(dims), deterministic=deterministic, batch_invariant=batch_ok,
        batch_detail=batch_detail, reference=records[0].outputs, total_runs=total, seconds=seconds,
        runs_per_second=total / max(seconds, 1e-9), distinct_results=len({r.digest for r in records}),
        nonfinite=nonfinite, devices=verdicts,
    )


class AgainstResult(_Model):
    matched: bool
    tier: str
    detail: str
    outputs: dict[str, str]  #: output -> "identical" or "differs"
    environment_differences: list[str]


def _identity(pinned: Any) -> dict[str, Any]:
    """What must agree for two engines to compute the same function the same way."""
    return {"model": pinned.model.structural_hash, "inputs": [t.model_dump() for t in pinned.inputs],
            "outputs": [t.model_dump() for t in pinned.outputs],
            "layers": [(layer.key, layer.tactic.model_dump()) for layer in pinned.layers],
            "config": pinned.config.backend}


def check_against(engine: Engine, pinned: Any) -> tuple[AgainstResult, dict[str, np.ndarray]]:
    """Draw the golden inputs a manifest records, run the engine, and compare with the recorded digests."""
    from reprobuild.engine.golden import golden_inputs
    from reprobuild.environment import environment_fingerprint
    from reprobuild.envpolicy import compare_environments
    from reprobuild.manifest.io import pinned_from_json

    embedded = pinned_from_json(engine.manifest_json)
    if _identity(embedded) != _identity(pinned):
        raise UsageError("the manifest describes another engine (other layers, tactics, bindings or backend); "
                         "verify --against needs the manifest this engine was built or replayed from")
    golden = pinned.golden
    inputs = golden_inputs(engine.inputs, golden.seed)
    drawn = {k: array_digest(v) for k, v in inputs.items()}
    recorded = {d.name: d.sha256 for d in golden.inputs}
    if drawn != recorded:
        raise UsageError(
            f"the inputs drawn from seed {golden.seed} differ from the ones the build drew (NumPy "
            f"{pinned.environment.get('numpy')} then, {np.__version__} now, draws other numbers); the golden "
            "outputs cannot be compared here")
    outputs = engine.create_execution_context().execute(inputs)
    expected = {d.name: d.sha256 for d in golden.outputs}
    verdicts = {k: "identical" if array_digest(v) == expected.get(k) else "differs" for k, v in outputs.items()}
    diffs = compare_environments(pinned.environment, environment_fingerprint(engine.backend))
    fields = [f"{d.field}: {d.recorded} -> {d.current}" for d in diffs]
    matched = all(v == "identical" for v in verdicts.values())
    if not matched:
        tier, detail = "none", "outputs differ from the golden digests the build recorded"
    elif not diffs:
        tier = "cross_process"
        detail = ("identical to the build's outputs in the same environment: cross_process (and cross_device, if "
                  "this is another machine with the same GPU model; the fingerprint cannot tell machines apart)")
    else:
        tier = "cross_process"
        detail = (f"identical to the build's outputs although the environment differs in {len(diffs)} field(s): "
                  "beyond cross_process")
    return AgainstResult(matched=matched, tier=tier, detail=detail, outputs=verdicts,
                         environment_differences=fields), inputs


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))

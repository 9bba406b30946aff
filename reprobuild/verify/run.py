"""Determinism verification: the same inputs through repeated runs, fresh contexts, threads, streams and
processes, every output's sha256 compared; the verdict per dimension and the determinism tier reached.

The plan, per process: ``contexts`` fresh contexts made one after another, one run each; then ``threads``
threads, each with ``streams`` contexts of its own (one stream each), each thread enqueuing one run on all of
its contexts before waiting for them, ``runs`` times. ``processes - 1`` worker processes (``python -m
reprobuild.verify.run``) run the same plan on the same engine file and inputs at the same time. Total runs:
``processes * (threads * streams * runs + contexts)``.

Tiers, in order (DESIGN.md): run_to_run (same context) < cross_context (contexts, threads and streams) <
cross_process < cross_device (devices of one GPU model: ``devices`` runs one worker process per GPU, and
``reprobuild.verify.fleet`` one Ray task per GPU of a cluster; ``--against`` a manifest from another machine shows it
too). batch_invariant (a sample's result does not depend on the batch it rides in) is reported separately.

What a verification records and reports is in ``reprobuild.verify.records``; the comparison across devices in
``reprobuild.verify.devices``. Both are re-exported here.
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
from typing import Any

import numpy as np

from reprobuild.core.digest import array_digest
from reprobuild.core.errors import UsageError
from reprobuild.engine import Engine, Runtime
from reprobuild.engine.golden import golden_inputs, layer_digests
from reprobuild.engine.runtime import engine_for_inputs
from reprobuild.environment.fingerprint import environment_fingerprint
from reprobuild.environment.policy import compare_environments
from reprobuild.kernels.backend import MULTI_DEVICE_ENV
from reprobuild.manifest.io import pinned_from_json
from reprobuild.manifest.tamper import describe, pinned_differences
from reprobuild.verify.devices import (
    LayerRef,
    collect_device_results,
    compare_devices,
    device_run,
    engine_layer_refs,
    hardware_model,
    spawn_device_workers,
    with_devices,
)
from reprobuild.verify.records import (
    AgainstResult,
    DeviceResult,
    DeviceVerdict,
    Dimension,
    FleetRecord,
    LayerDivergence,
    Locator,
    NonFinite,
    RunRecord,
    VerifyPlan,
    VerifyReport,
    nonfinite_outputs,
    output_digests,
)

__all__ = [
    "MULTI_DEVICE_ENV", "TIERS", "AgainstResult", "DeviceResult", "DeviceVerdict", "Dimension", "FleetRecord",
    "LayerDivergence", "LayerRef", "Locator", "NonFinite", "RunRecord", "VerifyPlan", "VerifyReport",
    "batch_invariance", "check_against", "collect_device_results", "compare_devices", "device_run",
    "engine_layer_refs", "hardware_model", "judge", "layer_outputs", "nonfinite_outputs", "output_digests",
    "run_plan", "spawn_device_workers", "tier_reached", "verify", "with_devices",
]

TIERS = ("run_to_run", "cross_context", "cross_process", "cross_device")


Progress = Callable[[int], None]


def run_plan(engine: Engine, inputs: Mapping[str, np.ndarray], plan: VerifyPlan, process: int = 0,
             progress: Progress | None = None) -> list[RunRecord]:
    """This process's share of the plan; every run's output digests."""
    advance = progress or (lambda n: None)
    records: list[RunRecord] = []
    lock = threading.Lock()

    def record(context: str, thread: int, stream: int, run: int, outputs: Mapping[str, np.ndarray]) -> None:
        digest, per_output = output_digests(outputs)
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


# --- worker processes --------------------------------------------------------------------------------------


def _spawn_workers(engine_path: str, inputs_path: str, plan: VerifyPlan, max_memory: int | None = None,
                   on_device: int | None = None, profile: int = 0) -> list[subprocess.Popen[str]]:
    """The plan's other processes, each on ``on_device``, this process's GPU (None: a cpu engine); a dynamic
    engine runs at the inputs' shapes with ``profile``'s tactics, as in this process."""
    spec = json.dumps({"runs": plan.runs, "contexts": plan.contexts, "threads": plan.threads,
                       "streams": plan.streams, "max_memory": max_memory, "on_device": on_device,
                       "profile": profile})
    return [subprocess.Popen([sys.executable, "-m", "reprobuild.verify.run", engine_path, inputs_path, spec, str(p)],
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
    max_memory, on_device = settings.pop("max_memory", None), settings.pop("on_device", None)
    profile = settings.pop("profile", 0)
    with open(engine_path, "rb") as f:
        data = f.read()
    with np.load(inputs_path, allow_pickle=False) as npz:
        inputs = {k: npz[k] for k in npz.files}
    if "device" in settings:
        print(device_run(data, inputs, max_memory=max_memory, profile=profile, **settings).model_dump_json())
        return 0
    engine = engine_for_inputs(Runtime(max_memory=max_memory, device=on_device).deserialize_engine(data), inputs,
                               profile)
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
            on_device = getattr(engine.backend, "device_id", None)  # the processes run where this one does
            profile = engine.profile_sizes[0] if engine.profile_sizes is not None else 0
            workers = (_spawn_workers(engine_path, inputs_path, plan, max_memory, on_device, profile)
                       if plan.processes > 1 else [])
            device_workers = spawn_device_workers(engine_path, inputs_path, devices or (), plan, max_memory, profile)
        try:
            records = run_plan(engine, inputs, plan, 0, progress)
            records += _collect(workers)
            if progress is not None:
                progress(plan.runs_per_process * (plan.processes - 1))
            results = collect_device_results(device_workers)
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
        dims, verdicts = with_devices(dims, records, results, engine)
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

def _identity(pinned: Any) -> dict[str, Any]:
    """What must agree for two engines to compute the same function the same way."""
    return {"model": pinned.model.structural_hash, "inputs": [t.model_dump() for t in pinned.inputs],
            "outputs": [t.model_dump() for t in pinned.outputs],
            "layers": [(layer.key, layer.tactic.model_dump()) for layer in pinned.layers],
            "config": pinned.config.backend}


def check_against(engine: Engine, pinned: Any) -> tuple[AgainstResult, dict[str, np.ndarray]]:
    """Draw the golden inputs a manifest records, run the engine, and compare with the recorded digests."""
    embedded = pinned_from_json(engine.manifest_json)
    if _identity(embedded) != _identity(pinned):
        raise UsageError("the manifest describes another engine (other layers, tactics, bindings or backend); "
                         "verify --against needs the manifest this engine was built or replayed from")
    # Every field the given pinned part holds otherwise than the engine's own record: for this engine's manifest an
    # edit (the command line refuses such a manifest before its runs), for another build's the ways they differ.
    record = [line.strip() for line in describe(pinned_differences(pinned, embedded), "the manifest").splitlines()]
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
    if record:
        detail += (f"; the manifest's pinned part differs from the one the engine embeds (record_differences: "
                   f"{record[0]}{', ...' if len(record) > 1 else ''})")
    return AgainstResult(matched=matched, tier=tier, detail=detail, outputs=verdicts,
                         environment_differences=fields, record_differences=record), inputs


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))

"""Verification across devices: ``device_run`` is one device worker's share (a process per GPU for
``verify --devices``, a Ray task per GPU for ``reprobuild.verify.fleet``), and ``compare_devices`` judges their digests
for the cross_device tier.

Devices of different GPU models are never compared bitwise: bitwise identity is promised within one model only, so
each model's devices are compared among themselves, and a model with one device leaves cross_device untested
("not comparable"), never failed and never passed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence

import numpy as np

from reprobuild.core.errors import UsageError
from reprobuild.engine import Engine, Runtime
from reprobuild.engine.golden import layer_digests
from reprobuild.engine.runtime import engine_for_inputs
from reprobuild.environment.fingerprint import environment_fingerprint
from reprobuild.kernels.backend import MULTI_DEVICE_ENV
from reprobuild.kernels.identity import shown_label
from reprobuild.verify.records import (
    DeviceResult,
    DeviceVerdict,
    Dimension,
    LayerDivergence,
    RunRecord,
    VerifyPlan,
    nonfinite_outputs,
    output_digests,
)

#: A layer as reports name it: (name, op, tactic label).
LayerRef = tuple[str, str, str]


def engine_layer_refs(engine: Engine) -> list[LayerRef]:
    return [(layer.name, layer.op, shown_label(layer.tactic)) for layer in engine.layers]


def device_run(engine_bytes: bytes, inputs: Mapping[str, np.ndarray], device: int | None, runs: int = 3,
               contexts: int = 1, traced_runs: int = 1, max_memory: int | None = None,
               profile: int = 0) -> DeviceResult:
    """One device worker's share, in the process that calls it: ``runs`` runs on one context, one run on each of
    ``contexts`` fresh contexts, and ``traced_runs`` (at least 1) traced runs for every layer's digest, all on the
    same inputs. ``--devices`` runs it in one process per GPU, ``reprobuild.verify.fleet`` in one Ray task per GPU."""
    if runs < 1 or contexts < 0 or traced_runs < 1:
        raise UsageError(f"a device worker needs runs >= 1, contexts >= 0, traced_runs >= 1; got {runs}, "
                         f"{contexts}, {traced_runs}")
    engine = engine_for_inputs(Runtime(max_memory=max_memory, device=device).deserialize_engine(engine_bytes),
                               inputs, profile)  # a dynamic engine at the inputs' shapes
    feeds = {k: np.array(v) for k, v in inputs.items()}  # writable copies: Ray hands out read-only arrays
    context = engine.create_execution_context()
    results = context.execute(feeds)
    first, outputs = output_digests(results)
    nonfinite = nonfinite_outputs(results)
    digests = [first] + [output_digests(context.execute(feeds))[0] for _ in range(runs - 1)]
    fresh = [output_digests(engine.create_execution_context().execute(feeds))[0] for _ in range(contexts)]
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


def spawn_device_workers(engine_path: str, inputs_path: str, devices: Sequence[int], plan: VerifyPlan,
                          max_memory: int | None = None, profile: int = 0) -> list[tuple[int, subprocess.Popen[str]]]:
    """One ``device_run`` worker process per device, all at once, with ``MULTI_DEVICE_ENV`` set."""
    env = {**os.environ, **MULTI_DEVICE_ENV}
    spawned = []
    for d in devices:
        spec = json.dumps({"device": d, "runs": plan.runs, "contexts": plan.contexts,
                           "traced_runs": max(1, plan.traced_runs), "max_memory": max_memory, "profile": profile})
        spawned.append((d, subprocess.Popen([sys.executable, "-m", "reprobuild.verify.run", engine_path, inputs_path,
                                             spec, f"device{d}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                            text=True, env=env)))
    return spawned


def collect_device_results(workers: list[tuple[int, subprocess.Popen[str]]]) -> list[DeviceResult]:
    results = []
    for device, w in workers:
        out, err = w.communicate()
        lines = [line for line in out.splitlines() if line.strip()]
        if w.returncode != 0 or not lines:
            raise UsageError(f"the verify worker process for device {device} failed (exit {w.returncode}) with no "
                             f"result:\n{err.strip()}")
        results.append(DeviceResult.model_validate_json(lines[-1]))
    return results


def with_devices(dims: list[Dimension], records: list[RunRecord], results: list[DeviceResult], engine: Engine
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

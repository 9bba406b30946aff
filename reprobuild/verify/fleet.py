"""Fleet verification on Ray: ``verify --devices``'s worker function (``device_run``) as one Ray task per GPU of
a cluster (one CPU each for a cpu engine); this process only reads the engine, draws the inputs, gathers the
digests and compares them with ``compare_devices``, so it needs no GPU itself.

Ray is an optional extra (``pip install -e '.[ray]'``), imported only when a fleet is verified. Ray 2.60 refuses
``local_mode`` ("no longer supported"), so ``--ray local`` starts a real Ray instance on this machine: the tasks run
in Ray worker processes, scheduled and fed exactly as on a cluster.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from reprobuild.core.errors import ReprobuildError, UsageError
from reprobuild.engine import Binding
from reprobuild.engine.format import deserialize_engine, engine_sha256
from reprobuild.kernels.backend import MULTI_DEVICE_ENV
from reprobuild.verify.devices import LayerRef, compare_devices, device_run, hardware_model
from reprobuild.verify.records import DeviceResult, Dimension, FleetRecord, VerifyReport
from reprobuild.verify.run import tier_reached

INSTALL_HINT = "pip install -e '.[ray]' (or pip install 'ray>=2.40')"


@dataclass(frozen=True)
class EngineOutline:
    """What the comparing process needs of an engine it never runs: its backend, digest, inputs and layers."""

    backend: str
    sha256: str
    inputs: tuple[Binding, ...]  #: the run-time inputs, then those pinned at build time (with their values)
    layers: list[LayerRef]


def engine_outline(data: bytes) -> EngineOutline:
    """The engine file checked as the runtime checks it, without a backend: no GPU, no kernel compiled."""
    header, weights = deserialize_engine(data)
    inputs = (tuple(Binding(t.name, tuple(t.shape), t.dtype) for t in header.inputs)
              + tuple(Binding(t.name, tuple(t.shape), t.dtype, weights[t.name]) for t in header.pinned_inputs))
    layers = [(layer.name, layer.op, f"{layer.tactic.family}.{layer.tactic.name} v{layer.tactic.version}")
              for layer in header.layers]
    return EngineOutline(backend=header.backend, sha256=engine_sha256(data), inputs=inputs, layers=layers)


@dataclass(frozen=True)
class FleetPlan:
    """``address``: ``local`` (a Ray instance started here) or what ``ray.init(address=...)`` takes. ``tasks``:
    None means one per GPU of the cluster for a cuda engine, 2 for a cpu engine. Each task runs ``device_run``."""

    address: str
    tasks: int | None = None
    runs: int = 10
    contexts: int = 2
    traced_runs: int = 3
    max_memory: int | None = None

    def validate(self) -> None:
        if not self.address:
            raise UsageError("--ray needs an address: local, or a Ray cluster's (ray://HOST:10001, HOST:6379, auto)")
        if self.tasks is not None and self.tasks < 1:
            raise UsageError(f"--ray-tasks must be at least 1; got {self.tasks}")
        if self.runs < 1 or self.contexts < 0 or self.traced_runs < 0:
            raise UsageError(f"--runs must be at least 1, --contexts and --traced-runs at least 0; got {self.runs}, "
                             f"{self.contexts}, {self.traced_runs}")


def import_ray() -> Any:
    try:
        import ray  # lazy: optional (the ray extra) and heavy; only --ray needs it
    except ImportError:
        raise UsageError(f"--ray needs Ray, which is not installed in this Python environment; install the extra: "
                         f"{INSTALL_HINT}") from None
    return ray


def task_options(backend: str) -> dict[str, Any]:
    """Each task's Ray options: one GPU (cuda) or one CPU (cpu), spread over the nodes, never retried (a retry
    would hide a crash), with ``MULTI_DEVICE_ENV`` in its environment: reprobuild never uses NCCL, but a framework
    in the same worker process might, and NVLink multicast stays off on multi-GPU hosts."""
    resources = {"num_gpus": 1} if backend == "cuda" else {"num_cpus": 1}
    return {**resources, "scheduling_strategy": "SPREAD", "max_retries": 0,
            "runtime_env": {"env_vars": dict(MULTI_DEVICE_ENV)}}


@contextlib.contextmanager
def ray_session(ray: Any, address: str, backend: str, tasks: int | None) -> Iterator[None]:
    """Connected to Ray for the block. ``local`` starts an instance here: for a cpu engine with as many CPUs as
    tasks (at most this machine's, so that a small CI machine is not oversubscribed) and no GPU; for a cuda engine
    with the CPUs and GPUs Ray detects. Another address joins that cluster. A connection made here is shut down
    after the block; one the caller already made is used and left alone."""
    if ray.is_initialized():
        yield
        return
    quiet: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
    # A verification run sends nothing anywhere: Ray's usage statistics stay off unless the user turned them on.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address == "local":
        if backend == "cuda":
            ray.init(**quiet)
        else:
            ray.init(num_cpus=max(1, min(tasks or 2, os.cpu_count() or 1)), num_gpus=0, **quiet)
    else:
        _check_reachable(address)
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UsageError(f"--ray {address}: cannot connect to a Ray cluster there ({exc}); give the head "
                             "node's address (ray://HOST:10001 or HOST:6379), auto on a node of the cluster, or "
                             "local") from None
    try:
        yield
    finally:
        ray.shutdown()


#: How long ``--ray HOST:PORT`` waits for a TCP connection before saying the address is unreachable (Ray itself
#: retries for minutes).
CONNECT_TIMEOUT_S = 5.0


def _check_reachable(address: str) -> None:
    """For ``HOST:PORT`` or ``ray://HOST:PORT``, a UsageError at once when nothing listens there, instead of Ray's
    minutes of retries; other forms (``auto``) are left to Ray."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise UsageError(f"--ray {address}: nothing answers at {host}:{port} within {CONNECT_TIMEOUT_S:.0f} s "
                         f"({exc}); give the head node's address (ray://HOST:10001 or HOST:6379), auto on a node of "
                         "the cluster, or local") from None


def fleet_task(engine_bytes: bytes, inputs: Mapping[str, np.ndarray], task: int, runs: int, contexts: int,
               traced_runs: int, max_memory: int | None) -> str:
    """One Ray task: ``device_run`` on the GPU Ray gave it (device 0 of the CUDA_VISIBLE_DEVICES Ray sets) or on
    its node's CPU, named by task, node and GPU; the result as JSON, validated by the caller."""
    import ray  # lazy: optional and heavy; this runs in a Ray worker, where it is installed

    result = device_run(engine_bytes, inputs, None, runs, contexts, traced_runs, max_memory)
    node_id, host = ray.get_runtime_context().get_node_id(), socket.gethostname()
    if result.device is None:
        label, device, where = f"task {task} (node {host}, cpu)", None, f"{node_id}/cpu"
    else:
        gpu_ids = ray.get_gpu_ids()
        device = int(gpu_ids[0]) if gpu_ids else result.device  # the GPU's index on its node
        label, where = f"task {task} (node {host}, GPU {device})", f"{node_id}/gpu{device}"
    update = {"label": label, "device": device, "task": task, "node": host, "where": where}
    return result.model_copy(update=update).model_dump_json()


def run_tasks(ray: Any, engine_bytes: bytes, inputs: Mapping[str, np.ndarray], backend: str, plan: FleetPlan,
              tasks: int) -> list[DeviceResult]:
    """``tasks`` fleet tasks, all submitted before any is awaited; their results in task order."""
    engine_ref, inputs_ref = ray.put(engine_bytes), ray.put({k: np.asarray(v) for k, v in inputs.items()})
    remote = ray.remote(fleet_task).options(**task_options(backend))
    refs = [remote.remote(engine_ref, inputs_ref, t, plan.runs, plan.contexts, max(1, plan.traced_runs),
                          plan.max_memory) for t in range(tasks)]
    results = []
    for t, ref in enumerate(refs):
        try:
            results.append(DeviceResult.model_validate_json(ray.get(ref)))
        except ray.exceptions.RayTaskError as exc:
            for other in refs[t + 1:]:
                ray.cancel(other, force=True)
            cause = getattr(exc, "cause", None)
            if isinstance(cause, ReprobuildError):
                raise type(cause)(f"Ray task {t} failed: {cause}") from None
            raise UsageError(f"Ray task {t} failed (is the same reprobuild installed on every node?): {exc}") from None
    return results


def _task_count(ray: Any, address: str, backend: str, tasks: int | None) -> int:
    """The tasks to run, after checking that the cluster has what each needs (else Ray would wait forever)."""
    kind = "GPU" if backend == "cuda" else "CPU"
    have = int(ray.cluster_resources().get(kind, 0))
    if have < 1:
        hint = " (ray start --num-gpus N)" if kind == "GPU" else ""
        raise UsageError(f"--ray {address}: the Ray cluster has no {kind}, and each task of a {backend} engine "
                         f"needs one; start Ray on nodes with {kind}s{hint}")
    return tasks if tasks is not None else (have if backend == "cuda" else 2)


def judge_workers(results: Sequence[DeviceResult], runs: int, contexts: int, traced_runs: int) -> list[Dimension]:
    """The dimensions below cross_device from the tasks' own runs alone (this process runs nothing): each task's
    runs, fresh contexts and traced runs, and the tasks as separate processes."""

    def own(name: str, tested: bool, bad: list[str], what: str, untested: str) -> Dimension:
        if not tested:
            return Dimension(name=name, tested=False, identical=None, detail=untested)
        return Dimension(name=name, tested=True, identical=not bad,
                         detail=f"{what} in each of {len(results)} task(s): "
                                + (f"differ in {', '.join(bad)}" if bad else "identical"))

    dims = [
        own("run_to_run", runs >= 2, [r.label for r in results if len(set(r.runs)) > 1],
            f"{runs} runs on one context", "--runs 1: each task ran once"),
        own("layer_outputs", traced_runs >= 2, [r.label for r in results if r.layers_differ_at is not None],
            f"{traced_runs} traced runs", f"--traced-runs {traced_runs}: needs 2 or more"),
        own("cross_context", contexts >= 1, [r.label for r in results if any(d != r.runs[0] for d in r.fresh)],
            f"{contexts} fresh context(s)", "--contexts 0"),
        Dimension(name="cross_thread", tested=False, identical=None, detail="each task runs one thread"),
        Dimension(name="cross_stream", tested=False, identical=None, detail="each task runs one stream"),
    ]
    return [*dims, _cross_process(results)]


def _cross_process(results: Sequence[DeviceResult]) -> Dimension:
    """Tasks are processes: those sharing a device compare for cross_process alone; where no device ran two
    tasks, those on different devices of one model (a stronger test, which cross_device also reports)."""
    def groups(key: Any) -> list[list[DeviceResult]]:
        found: dict[Any, list[DeviceResult]] = {}
        for r in results:
            found.setdefault(key(r), []).append(r)
        return [members for members in found.values() if len(members) >= 2]

    shared = groups(lambda r: (hardware_model(r.fingerprint), r.where))
    what = "sharing a device"
    if not shared:
        shared, what = groups(lambda r: hardware_model(r.fingerprint)), "on different devices of one model"
    if not shared:
        return Dimension(name="cross_process", tested=False, identical=None,
                         detail="one task per GPU model: use --ray-tasks 2 or more")
    bad = [m[0].label for m in shared if len({(r.runs[0], tuple(r.layers)) for r in m}) > 1]
    return Dimension(name="cross_process", tested=True, identical=not bad,
                     detail=f"{sum(map(len, shared))} tasks {what}, each its own process: "
                            + (f"they differ (those with {', '.join(bad)})" if bad else "identical"))


def fleet_report(outline: EngineOutline, results: Sequence[DeviceResult], plan: FleetPlan, inputs_label: str,
                 seconds: float, ray_version: str) -> VerifyReport:
    """The verify report of a fleet, from the tasks' results alone: what ``verify`` reports, with the
    dimensions from ``judge_workers`` and ``compare_devices`` and one entry per task."""
    dims = judge_workers(results, plan.runs, plan.contexts, max(1, plan.traced_runs))
    cross_device, verdicts = compare_devices(results, outline.layers)
    dims.append(cross_device)
    reference = next(r for r, v in zip(results, verdicts) if v.reference)
    total = sum(len(r.runs) + len(r.fresh) for r in results)
    return VerifyReport(
        engine_sha256=outline.sha256, backend=outline.backend,
        plan={"runs": plan.runs, "contexts": plan.contexts, "traced_runs": max(1, plan.traced_runs),
              "tasks": len(results)},
        inputs=inputs_label, dimensions=dims, tier=tier_reached(dims),
        deterministic=all(d.identical for d in dims if d.tested), batch_invariant=None,
        batch_detail="not tested: with --ray the engine runs only in the Ray tasks", reference=reference.outputs,
        total_runs=total, seconds=seconds, runs_per_second=total / max(seconds, 1e-9),
        distinct_results=len({d for r in results for d in (*r.runs, *r.fresh)}), nonfinite=reference.nonfinite,
        devices=verdicts, fleet=FleetRecord(address=plan.address, tasks=len(results), ray=ray_version))


def verify_on_ray(engine_bytes: bytes, inputs: Mapping[str, np.ndarray], plan: FleetPlan, inputs_label: str = "",
                  outline: EngineOutline | None = None) -> VerifyReport:
    """Verify an engine across a Ray fleet: every task runs ``device_run`` on the same engine bytes and inputs
    (``ray.put`` once), and the results are compared here. ``outline``: the engine's, if already read."""
    plan.validate()
    ray = import_ray()
    outline = outline or engine_outline(engine_bytes)
    started = time.perf_counter()
    with ray_session(ray, plan.address, outline.backend, plan.tasks):
        tasks = _task_count(ray, plan.address, outline.backend, plan.tasks)
        results = run_tasks(ray, engine_bytes, inputs, outline.backend, plan, tasks)
    return fleet_report(outline, results, plan, inputs_label, time.perf_counter() - started, ray.__version__)

"""The Builder, in TensorRT's object model: ``Builder(logger)`` -> ``create_network()``,
``create_builder_config()`` -> ``build(network, config)`` -> engine bytes + manifest.

A build is a function of (network, config, environment): passes, then per-layer tactic selection, memory
planning, and serialization with the pinned manifest embedded. Same inputs and the same choices give the same
engine bytes.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reprobuild.builder.config import BuilderConfig, ProgressMonitor
from reprobuild.builder.selection import Candidate, layer_seed, layer_spec, select_tactic
from reprobuild.digest import sha256_hex
from reprobuild.engine.format import FORMAT_VERSION, serialize_engine
from reprobuild.engine.memory import LayerUse, MemoryPlan, plan_memory
from reprobuild.environment import environment_fingerprint
from reprobuild.errors import BuildError, ReprobuildError
from reprobuild.ir import Network, NetworkDefinition, attrs_to_json
from reprobuild.kernels.backend import Backend, CudaBackend, cuda_module, resolve_backend
from reprobuild.kernels.nvrtc import source_sha256
from reprobuild.kernels.tactic import Tactic, TacticRegistry, default_registry
from reprobuild.logger import ErrorRecorder, Logger, Severity
from reprobuild.manifest import models as m
from reprobuild.manifest.io import pinned_bytes
from reprobuild.passes import run_passes


@dataclass(frozen=True)
class BuildResult:
    engine: bytes
    manifest: m.Manifest
    network: Network

    @property
    def engine_sha256(self) -> str:
        return sha256_hex(self.engine)


class Builder:
    def __init__(self, logger: Logger | None = None, error_recorder: ErrorRecorder | None = None,
                 registry: TacticRegistry | None = None) -> None:
        self.logger = logger or Logger()
        self.error_recorder = error_recorder
        self.registry = registry or default_registry()

    def create_network(self) -> NetworkDefinition:
        return NetworkDefinition()

    def create_builder_config(self) -> BuilderConfig:
        return BuilderConfig()

    def build(self, network: Network | NetworkDefinition, config: BuilderConfig) -> BuildResult:
        try:
            return self._build(network, config)
        except ReprobuildError as exc:
            if self.error_recorder is not None:
                self.error_recorder.report(exc)
            raise

    def _build(self, network: Network | NetworkDefinition, config: BuilderConfig) -> BuildResult:
        started = time.perf_counter()
        started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        config.validate()
        monitor = config.progress_monitor or ProgressMonitor()
        net = network.finalize() if isinstance(network, NetworkDefinition) else network
        backend, backend_reason = resolve_backend(config.backend)
        self.logger.info(f"backend {backend.name} ({backend_reason})")
        net = run_passes(net, config.passes)
        self.logger.info(f"network after passes {', '.join(config.passes)}: {net.summary()}")
        environment = environment_fingerprint(backend)
        keys = net.layer_keys()

        monitor.phase_start("tactic selection", None, len(net.layers))
        chosen: list[Candidate] = []
        evidence: list[m.LayerEvidence] = []
        timed = 0
        for i, layer in enumerate(net.layers):
            spec = layer_spec(net, i)
            winner, candidates = select_tactic(spec, self.registry.candidates(layer.op, backend.name), backend,
                                               config, layer_seed(config.seed, keys[i]))
            timed += sum(1 for c in candidates if c.samples_ns)
            chosen.append(winner)
            evidence.append(m.LayerEvidence(name=layer.name, key=keys[i],
                                            candidates=[_candidate_record(c) for c in candidates]))
            message = (f"[{i + 1}/{len(net.layers)}] {layer.name} ({layer.op}): {winner.tactic.name} "
                       f"{(winner.median_ns or 0) / 1e6:.4f} ms of {sum(1 for c in candidates if c.samples_ns)} timed")
            self.logger.log(Severity.INFO, message)
            if not monitor.step_complete("tactic selection", i, message):
                raise BuildError("the build was cancelled by its progress monitor")
        monitor.phase_finish("tactic selection")

        tactics = [c.tactic for c in chosen]
        plan = _plan(net, tactics, [c.workspace_bytes for c in chosen])
        warmup, iterations = config.timing_for(backend.name)
        pinned = m.Pinned(
            model=_model_record(net),
            config=m.BuildConfigRecord(
                backend=backend.name,  # type: ignore[arg-type]
                timing=m.TimingConfig(warmup=warmup, iterations=iterations),
                seed=config.seed, max_workspace_bytes=config.max_workspace_bytes, determinism=config.determinism,
                tactic_sources=sorted(config.tactic_sources) if config.tactic_sources is not None else None,
                passes=list(config.passes),
            ),
            environment=environment,
            inputs=[_tensor(net, t.name) for t in net.inputs],
            outputs=[_tensor(net, t.name) for t in net.outputs],
            layers=[
                m.LayerRecord(
                    name=layer.name, op=layer.op, key=keys[i], attrs=attrs_to_json(layer.attrs),
                    inputs=[_tensor(net, t) for t in layer.inputs], outputs=[_tensor(net, t) for t in layer.outputs],
                    tactic=m.TacticRef(**tactics[i].ref), workspace_bytes=chosen[i].workspace_bytes,
                )
                for i, layer in enumerate(net.layers)
            ],
            kernel_sources=_kernel_sources(tactics, backend),
            memory=m.MemoryRecord(
                weights_bytes=sum(int(net.constants[k].nbytes) for k in net.constants),
                activation_bytes=plan.activation_bytes, workspace_bytes=plan.workspace_bytes,
                context_bytes=plan.context_bytes, unshared_activation_bytes=plan.unshared_bytes,
            ),
        )
        engine = serialize_engine(_engine_header(net, tactics, chosen, plan, backend, pinned), net.constants)
        manifest = m.Manifest(
            pinned=pinned,
            evidence=m.Evidence(
                started_at=started_at, wall_seconds=round(time.perf_counter() - started, 3),
                backend_reason=backend_reason,
                timing_clock="cuda events" if isinstance(backend, CudaBackend) else "time.perf_counter_ns",
                tactics_timed=timed, layers=evidence,
            ),
            engine=m.EngineRecord(sha256=sha256_hex(engine), size_bytes=len(engine), format_version=FORMAT_VERSION),
        )
        self.logger.info(f"built engine {sha256_hex(engine)[:16]}... ({len(engine)} bytes): {len(net.layers)} "
                         f"layers, {timed} tactic timings, {time.perf_counter() - started:.2f} s")
        return BuildResult(engine=engine, manifest=manifest, network=net)


def _tensor(net: Network, name: str) -> m.TensorRecord:
    info = net.tensors[name]
    return m.TensorRecord(name=name, shape=list(info.shape), dtype=info.dtype)


def _model_record(net: Network) -> m.ModelRecord:
    src = dict(net.source or {})
    return m.ModelRecord(
        sha256=src.get("sha256"), size_bytes=src.get("size_bytes"), structural_hash=net.structural_hash,
        opset=src.get("opset"), ir_version=src.get("ir_version"), producer=src.get("producer"),
        graph_name=src.get("graph_name"),
    )


def _candidate_record(c: Candidate) -> m.CandidateRecord:
    return m.CandidateRecord(
        tactic=m.TacticRef(**c.tactic.ref), status=c.status, reason=c.reason,  # type: ignore[arg-type]
        source=c.tactic.source, determinism=c.tactic.determinism.value, workspace_bytes=c.workspace_bytes,
        samples_ns=c.samples_ns, median_ns=c.median_ns,
    )


def _activations(net: Network) -> list[str]:
    names = {t.name for t in (*net.inputs, *net.outputs)}
    for layer in net.layers:
        names.update(t for t in (*layer.inputs, *layer.outputs) if t not in net.constants)
    return sorted(names)


def _plan(net: Network, tactics: Sequence[Tactic], workspaces: Sequence[int]) -> MemoryPlan:
    sizes = {t: net.tensors[t].nbytes for t in _activations(net)}
    uses = [LayerUse(layer.inputs, layer.outputs, bool(getattr(tactic, "aliases_input", False)), ws)
            for layer, tactic, ws in zip(net.layers, tactics, workspaces)]
    return plan_memory(sizes, uses, [t.name for t in net.inputs], [t.name for t in net.outputs])


def _kernel_sources(tactics: Sequence[Tactic], backend: Backend) -> list[m.KernelSourceRecord]:
    files = sorted({f for t in tactics for f in t.source_files})
    records = []
    for f in files:
        if f.endswith(".cu"):
            compiled = cuda_module(backend, f)
            records.append(m.KernelSourceRecord(file=f, sha256=source_sha256(f),
                                                compile_options=list(compiled.options),
                                                cubin_sha256=compiled.cubin_sha256))
        else:
            records.append(m.KernelSourceRecord(file=f, sha256=source_sha256(f)))
    return records


def _engine_attr(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _engine_header(net: Network, tactics: Sequence[Tactic], chosen: Sequence[Candidate], plan: MemoryPlan,
                   backend: Backend, pinned: m.Pinned) -> dict[str, Any]:
    def tensor(name: str) -> dict[str, Any]:
        info = net.tensors[name]
        return {"name": name, "shape": list(info.shape), "dtype": info.dtype}

    manifest = pinned_bytes(pinned)
    return {
        "format": "reprobuild-engine",
        "backend": backend.name,
        "name": net.name,
        "inputs": [tensor(t.name) for t in net.inputs],
        "outputs": [tensor(t.name) for t in net.outputs],
        "activations": [tensor(t) for t in _activations(net)],
        "layers": [
            {"name": layer.name, "op": layer.op, "attrs": {k: _engine_attr(v) for k, v in layer.attrs},
             "inputs": list(layer.inputs), "outputs": list(layer.outputs), "tactic": tactics[i].ref,
             "workspace_bytes": chosen[i].workspace_bytes}
            for i, layer in enumerate(net.layers)
        ],
        "memory": {"alignment": plan.alignment, "activation_bytes": plan.activation_bytes,
                   "workspace_offset": plan.workspace_offset, "workspace_bytes": plan.workspace_bytes,
                   "offsets": dict(plan.offsets)},
        "manifest": manifest,
        "manifest_sha256": sha256_hex(manifest),
    }



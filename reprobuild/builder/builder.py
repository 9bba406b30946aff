"""The Builder, in TensorRT's object model: ``Builder(logger)`` -> ``create_network()``,
``create_builder_config()`` -> ``build(network, config)`` -> engine bytes + manifest.

A build is a function of (network, config, environment): passes, then per-layer tactic selection, memory
planning, and serialization with the pinned manifest embedded. Same inputs and the same choices give the same
engine bytes.

Memory: before it allocates any activation or timing buffer, the build works out the most memory it will need at
once (:class:`BuildMemory`: the weights, plus the larger of timing the most demanding layer and the golden run,
which holds an execution context's activations and workspace, its inputs and outputs and a copy of every layer's
outputs) and refuses, with a :class:`ResourceError`, a build over ``BuilderConfig.max_memory`` (by default the
device's memory on cuda; on cpu the host's physical memory or, when lower, this process's cgroup or address-space
limit). It checks again with the exact memory plan once the tactics are chosen, before the golden run. Where less
memory is available than the cap says, the MemoryError of the timing, the golden run or the serialization is a
ResourceError naming that step.

Weights holding NaN or infinities are built as they are, with a warning and a record in the manifest's evidence
(``nonfinite_weights``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from reprobuild.builder.config import BuilderConfig, ProgressMonitor
from reprobuild.builder.limits import check_engine_limits
from reprobuild.builder.selection import Candidate, choose, layer_seed, layer_spec, plan_candidates, time_candidates
from reprobuild.builder.selector import AlgorithmContext, AlgorithmSelector, BuildPlan, PlannedLayer
from reprobuild.builder.timing_cache import TimingCache
from reprobuild.builder.timing_lock import timing_lock
from reprobuild.core import symbolic
from reprobuild.core.digest import array_digest, attrs_to_json, sha256_hex
from reprobuild.core.dtypes import dtype_name, is_float, itemsize
from reprobuild.core.errors import BuildError, ReprobuildError, ResourceError
from reprobuild.core.logger import ErrorRecorder, Logger, Severity
from reprobuild.core.symbolic import symbol_ranges
from reprobuild.core.textformat import printable
from reprobuild.engine.allocator import GpuAllocator, check_allocator
from reprobuild.engine.format import FORMAT_VERSION, engine_header, serialize_engine
from reprobuild.engine.golden import golden_inputs, layer_digests
from reprobuild.engine.memory import LayerUse, MemoryPlan, MemoryTotals, device_memory_info, plan_memory
from reprobuild.engine.runtime import Engine, Runtime, default_max_memory, library_workspace_bytes
from reprobuild.environment.fingerprint import environment_fingerprint
from reprobuild.ir import Network, NetworkDefinition, OptimizationProfile, profile_ranges, profile_sizes
from reprobuild.kernels.backend import Backend, CudaBackend, cuda_module, resolve_backend
from reprobuild.kernels.identity import check_installed, kernel_source_sha256, shown_label
from reprobuild.kernels.tactic import LayerSpec, Tactic, TacticRegistry, precision_of
from reprobuild.manifest import models as m
from reprobuild.manifest.io import pinned_bytes
from reprobuild.ops import get_op
from reprobuild.ops.layer_attributes import attribute_schema
from reprobuild.passes import pass_versions, run_passes
from reprobuild.registry import default_registry


@dataclass(frozen=True)
class BuildResult:
    engine: bytes
    manifest: m.Manifest
    network: Network

    @property
    def engine_sha256(self) -> str:
        return sha256_hex(self.engine)

    @property
    def tactics_timed(self) -> int:
        """Tactic timings this build measured: zero for a replay."""
        return self.manifest.evidence.tactics_timed if self.manifest.evidence else 0


class Builder:
    """Builds engines. ``gpu_allocator`` supplies the scratch memory of the build's golden run (None: a default
    ``GpuAllocator``). Builds that time tactics on one device take turns (``timing_lock``)."""

    def __init__(self, logger: Logger | None = None, error_recorder: ErrorRecorder | None = None,
                 registry: TacticRegistry | None = None, gpu_allocator: GpuAllocator | None = None) -> None:
        self.logger = logger or Logger()
        self.error_recorder = error_recorder
        self.registry = registry or default_registry()
        self.gpu_allocator = check_allocator(gpu_allocator)

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

    def _build(self, network: Network | NetworkDefinition, config: BuilderConfig,
               passes_done: bool = False, dynamic: Callable[[Sequence[Tactic]], dict[str, Any]] | None = None
               ) -> BuildResult:
        """The build; ``passes_done``: ``network`` is already what ``config``'s passes made (a refit's).
        ``dynamic``: for profile 0 of a dynamic build, the engine's dynamic section from the chosen tactics."""
        net0 = network.finalize() if isinstance(network, NetworkDefinition) else network
        if net0.symbols:
            return self._build_dynamic(net0, config, passes_done)
        started = time.perf_counter()
        started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        phases: dict[str, float] = {}
        mark = started

        def phase(name: str) -> None:
            nonlocal mark
            now = time.perf_counter()
            phases[name] = round(now - mark, 4)
            mark = now

        config.validate()
        monitor = config.progress_monitor or ProgressMonitor()
        selector = config.algorithm_selector or AlgorithmSelector()
        net = net0
        backend, backend_reason = resolve_backend(config.backend, config.device)
        self.logger.info(f"backend {backend.name} ({backend_reason})")
        device_memory = device_memory_info(backend)
        if device_memory is not None:
            self.logger.info(f"device memory (cudaMemGetInfo): {_size(device_memory[0])} free of "
                             f"{_size(device_memory[1])}")
        if not passes_done:
            net = run_passes(net, config.effective_passes)
        check_engine_limits(net)  # before any work: a tensor no engine file can hold is refused, naming its node
        self.logger.info(f"network after passes {', '.join(config.effective_passes)}: {net.summary()}")
        nonfinite = _nonfinite_weights(net)
        if nonfinite:
            self.logger.warning(_nonfinite_message(nonfinite))
        environment = environment_fingerprint(backend)
        config_record = _config_record(config, backend.name)
        timing = config_record.timing

        phase("setup")
        layers = self._plan(net, config, backend, selector)
        cap = memory_cap(config, backend)
        _check_memory(BuildMemory.estimate(net, layers, selector.requires_timing), cap,
                      "at least: as if every layer got its leanest tactic")
        keys = net.layer_keys()
        selector.begin(BuildPlan(
            model=_model_record(net), config=config_record, environment=environment,
            layers=tuple(PlannedLayer(ctx, tuple(c.algorithm() for c in cands if c.status == "eligible"),
                                      tuple((c.algorithm(), c.reason) for c in cands if c.status == "excluded"),
                                      _layer_fields(net, ctx.index, keys))
                         for ctx, _, cands in layers),
            inputs=tuple(_tensor(net, t.name) for t in net.inputs),
            outputs=tuple(_tensor(net, t.name) for t in net.outputs),
            pinned_inputs=tuple(_pinned_input(net, t) for t in net.pinned_inputs),
        ))

        cache = config.timing_cache

        def cached(ctx: AlgorithmContext, c: Candidate) -> list[int] | None:
            if cache is None:
                return None
            return cache.get(TimingCache.key(ctx.signature, c.tactic.ref, environment, timing.model_dump()))

        def store(ctx: AlgorithmContext, c: Candidate, samples: list[int]) -> None:
            if cache is not None:
                key = TimingCache.key(ctx.signature, c.tactic.ref, environment, timing.model_dump())
                cache.put(key, shown_label(c.tactic), samples)

        phase("plan")
        with (timing_lock(backend, self.logger) if selector.requires_timing
              else contextlib.nullcontext({"waited": 0.0})) as lock:
            chosen, timed, cache_hits = self._select(layers, selector, backend, config, timing, monitor, cached,
                                                     store)
        if lock["waited"]:
            phases["timing_lock_wait"] = lock["waited"]
        phase("selection")

        tactics = [c.tactic for c in chosen]
        specs = [spec for _, spec, _ in layers]
        plan = _plan(net, tactics, [c.workspace_bytes for c in chosen])
        _check_memory(BuildMemory.exact(net, layers, plan, selector.requires_timing), cap,
                      "with the chosen tactics")
        execution = _execution(config, backend, net, tactics)
        self.logger.info(f"execution: {'CUDA graph' if execution.cuda_graph else 'eager launches'} "
                         f"({execution.reason})")
        digests = {k: net.constant_digest(k) for k in net.constants}
        with _out_of_memory("running the engine on the golden inputs", cap):
            golden = self._golden(_engine_header(net, tactics, chosen, plan, backend, execution.cuda_graph, b""),
                                  net, digests, config.seed, config.max_memory, getattr(backend, "device_id", None))
        phase("golden")
        section = dynamic(tactics) if dynamic is not None else None
        timing_shapes: list[Any] = section.pop("timing") if section is not None else ["opt"]
        pinned = m.Pinned(
            dynamic=m.DynamicRecord(symbols=section["symbols"], shapes=section["shapes"], timing=timing_shapes,
                                    profiles=[m.ProfileRecord(**p) for p in section["profiles"]])
            if section is not None else None,
            model=_model_record(net),
            config=config_record,
            environment=environment,
            inputs=[_tensor(net, t.name) for t in net.inputs],
            pinned_inputs=[_pinned_input(net, t) for t in net.pinned_inputs],
            outputs=[_tensor(net, t.name) for t in net.outputs],
            layers=[
                m.LayerRecord(
                    **_layer_fields(net, i, keys), tactic=m.TacticRef(**tactics[i].ref),
                    workspace_bytes=chosen[i].workspace_bytes, precision=precision_of(tactics[i], specs[i]),
                )
                for i in range(len(net.layers))
            ],
            kernel_sources=_kernel_sources(tactics, specs, backend),
            memory=m.MemoryRecord(
                weights_bytes=sum(int(net.constants[k].nbytes) for k in net.constants),
                activation_bytes=plan.activation_bytes, workspace_bytes=plan.workspace_bytes,
                library_workspace_bytes=plan.library_bytes, context_bytes=plan.context_bytes,
                unshared_activation_bytes=plan.unshared_bytes,
            ),
            execution=execution,
            golden=golden,
        )
        phase("manifest")
        with _out_of_memory("writing the engine's bytes (a copy of every weight)", cap):
            header = _engine_header(net, tactics, chosen, plan, backend, execution.cuda_graph, pinned_bytes(pinned))
            if section is not None:
                header["dynamic"] = [section]
            engine = serialize_engine(header, net.constants, digests)
        phase("serialize")
        selector.end(pinned, sha256_hex(engine))
        totals = MemoryTotals.of(backend.name, len(engine), pinned.memory.weights_bytes, pinned.memory.context_bytes)
        for line in totals.lines():
            self.logger.info(line)
        manifest = m.Manifest(
            pinned=pinned,
            evidence=m.Evidence(
                started_at=started_at, wall_seconds=round(time.perf_counter() - started, 3),
                backend_reason=backend_reason,
                timing_clock=("cuda events around a captured CUDA graph of runs_per_sample runs (launch plans), or "
                              "around Python calls (other tactics)") if isinstance(backend, CudaBackend)
                else "time.perf_counter_ns",
                selector=type(selector).__name__, tactics_timed=timed, timing_cache_hits=cache_hits,
                phase_seconds=phases,
                layers=[m.LayerEvidence(name=ctx.name, key=ctx.key, candidates=[_candidate_record(c) for c in cands])
                        for ctx, _, cands in layers],
                nonfinite_weights=nonfinite,
                memory_report=m.MemoryReportRecord(
                    **dataclasses.asdict(totals), device_free_bytes=device_memory[0] if device_memory else None,
                    device_total_bytes=device_memory[1] if device_memory else None),
            ),
            engine=m.EngineRecord(sha256=sha256_hex(engine), size_bytes=len(engine), format_version=FORMAT_VERSION),
        )
        self.logger.info(f"built engine {sha256_hex(engine)[:16]}... ({len(engine)} bytes): {len(net.layers)} "
                         f"layers, {timed} tactic timings, {cache_hits} from the timing cache, "
                         f"{time.perf_counter() - started:.2f} s")
        return BuildResult(engine=engine, manifest=manifest, network=net)

    def _build_dynamic(self, net: Network, config: BuilderConfig, passes_done: bool = False) -> BuildResult:
        """A network with dynamic dimensions, built for ``config.profiles``: the passes run once on the symbolic
        network; each profile's tactics are timed at its opt shapes among those eligible at its min and max shapes
        too (``_ProfileSelector``); the engine is profile 0's opt engine with the dynamic section (symbolic
        shapes and attributes, every profile's tactics), which the runtime specializes per run shape."""
        config.validate()
        if not config.profiles:
            raise BuildError(f"the network has dynamic dimensions ({', '.join(net.symbols)}); give at least one "
                             "optimization profile (BuilderConfig.add_optimization_profile, or --profile "
                             "NAME=MIN:OPT:MAX), or fix every dimension (--input-shape)")
        declared = {t.name: t.shape for t in net.inputs}
        sizes = profile_sizes(config.profiles, declared)
        parsed = dict((net.source or {}).get("symbol_ranges") or {})
        hull = profile_ranges(config.profiles, declared)
        for sym, (lo, hi) in hull.items():
            if sym in parsed and not parsed[sym][0] <= lo <= hi <= parsed[sym][1]:
                raise BuildError(f"the profiles give {sym!r} the range [{lo}, {hi}], but the network was parsed for "
                                 f"[{parsed[sym][0]}, {parsed[sym][1]}]; parse it with the same profiles")
        ranges = {sym: tuple(parsed.get(sym, hull[sym])) for sym in net.symbols}
        if not passes_done:
            with symbol_ranges(ranges):
                net = run_passes(net, config.effective_passes)
        check_engine_limits(net.specialize({sym: hi for sym, (_, hi) in ranges.items()}))
        self.logger.info(f"dynamic network after passes: {len(net.layers)} layers over {dict(ranges)}; "
                         f"{len(sizes)} optimization profile(s)")
        dynamic_inputs = [t.name for t in net.inputs if any(not isinstance(d, int) for d in t.shape)]
        chosen: dict[int, list[dict[str, Any]]] = {}
        results: dict[int, BuildResult] = {}
        for index in [*range(1, len(sizes)), 0]:  # profile 0 last: its engine carries every profile's tactics
            low, opt, high = sizes[index]
            self.logger.info(f"profile {index}: min {low}, opt {opt}, max {high}")
            inner = (config.algorithm_selector or AlgorithmSelector()).for_profile(index)
            selector = _ProfileSelector(inner, self.registry, index, net.specialize(low), net.specialize(high),
                                        tuple(w for w in ("min", "max") if w in config.profile_timing))
            profile_config = dataclasses.replace(config, algorithm_selector=selector, profiles=[])

            def section(tactics: Sequence[Tactic], index: int = index) -> dict[str, Any]:
                chosen[index] = [dict(t.ref) for t in tactics]
                return _dynamic_section(net, ranges, config.profiles, dynamic_inputs, chosen, config.profile_timing)

            results[index] = self._build(net.specialize(opt), profile_config, passes_done=True,
                                         dynamic=section if index == 0 else None)
            if index:
                chosen[index] = [dict(layer.tactic.model_dump()) for layer in results[index].manifest.pinned.layers]
        return dataclasses.replace(results[0], network=net)

    def _select(self, layers: list[tuple[AlgorithmContext, LayerSpec, list[Candidate]]],
                selector: AlgorithmSelector, backend: Backend, config: BuilderConfig, timing: m.TimingConfig,
                monitor: ProgressMonitor, cached: Callable[[AlgorithmContext, Candidate], list[int] | None],
                store: Callable[[AlgorithmContext, Candidate, list[int]], None]) -> tuple[list[Candidate], int, int]:
        """Each layer's tactic: timed (unless the selector forces one) and chosen; with the counts of timings
        measured and taken from the timing cache."""
        monitor.phase_start("tactic selection", None, len(layers))
        chosen: list[Candidate] = []
        timed = cache_hits = 0
        for ctx, spec, candidates in layers:
            allowed = _allowed(selector, ctx, candidates)
            if selector.requires_timing:
                with _out_of_memory(f"timing the tactics of layer {ctx.name!r} ({ctx.op}) on buffers of its shapes",
                                    memory_cap(config, backend)):
                    timed += time_candidates(spec, allowed, backend, timing, layer_seed(config.seed, ctx.key),
                                             functools.partial(cached, ctx), functools.partial(store, ctx))
                    timed += _time_at_other_shapes(selector, ctx, allowed, backend, timing,
                                                   layer_seed(config.seed, ctx.key))
                cache_hits += sum(1 for c in allowed if c.timing_source == "cache")
            winner = choose(allowed, selector.requires_timing, config.tie_band,
                            getattr(selector, "untimed_reason", f"first allowed by {type(selector).__name__}"))
            selector.report(ctx, winner.algorithm())
            chosen.append(winner)
            message = (f"[{ctx.index + 1}/{len(layers)}] {printable(ctx.name)} ({ctx.op}): {winner.shown}"
                       + (f" {(winner.median_ns or 0) / 1e6:.4f} ms of {len(allowed)} timed"
                          if selector.requires_timing else " (not timed)"))
            self.logger.log(Severity.INFO, message)
            if not monitor.step_complete("tactic selection", ctx.index, message):
                raise BuildError("the build was cancelled by its progress monitor")
        monitor.phase_finish("tactic selection")
        return chosen, timed, cache_hits

    def _golden(self, header: dict[str, Any], net: Network, digests: dict[str, str], seed: int,
                max_memory: int | None = None, device: int | None = None) -> m.GoldenRecord:
        """Run the engine once, in memory, on inputs drawn from ``seed``, and record what it computes (within
        ``max_memory``, the build's cap)."""
        runtime = Runtime(Logger(Severity.ERROR), registry=self.registry, max_memory=max_memory,
                          gpu_allocator=self.gpu_allocator, device=device)
        engine = Engine(engine_header(header, net.constants, digests), net.constants, "(in memory)", runtime)
        inputs = golden_inputs(engine.inputs, seed)
        outputs, layers = engine.create_execution_context().execute_traced(inputs)
        return m.GoldenRecord(
            seed=seed,
            inputs=[m.DigestRecord(name=k, sha256=array_digest(v)) for k, v in inputs.items()],
            outputs=[m.DigestRecord(name=k, sha256=array_digest(v)) for k, v in outputs.items()],
            layers=[m.DigestRecord(name=layer.name, sha256=digest)
                    for layer, digest in zip(engine.layers, layer_digests(layers))],
        )

    def _plan(self, net: Network, config: BuilderConfig, backend: Backend,
              selector: AlgorithmSelector) -> list[tuple[AlgorithmContext, LayerSpec, list[Candidate]]]:
        """Every layer's context and candidates, eligible or excluded with a reason, before anything is timed: a
        tactic that chooses its parameters per layer gives one candidate per variant it offers on ``backend``,
        and one for the values ``selector`` pins for it (a replay's), offered or not."""
        keys, signatures = net.layer_keys(), net.layer_signature_digests()
        compute_capability = getattr(backend, "compute_capability", None)
        planned = []
        for i, layer in enumerate(net.layers):
            spec = layer_spec(net, i)
            ctx = AlgorithmContext(index=i, name=layer.name, op=layer.op, key=keys[i], signature=signatures[i],
                                   inputs=spec.inputs, outputs=spec.outputs, attrs=spec.attrs)

            def pinned(tactic: Tactic, ctx: AlgorithmContext = ctx) -> Mapping[str, Any] | None:
                return selector.pinned_parameters(ctx, Candidate(tactic).algorithm())

            planned.append((ctx, spec, plan_candidates(spec, self.registry.candidates(layer.op, backend.name),
                                                       config, backend, compute_capability, pinned)))
        # Every tactic the manifest will record, by the identity the lock gives it, must still be that code.
        check_installed(c.tactic for _, _, candidates in planned for c in candidates)
        return planned


def _dynamic_section(net: Network, ranges: Mapping[str, tuple[int, int]], profiles: Sequence[OptimizationProfile],
                     dynamic_inputs: Sequence[str], chosen: Mapping[int, Sequence[Mapping[str, Any]]],
                     timing: Sequence[str] = ("opt",)) -> dict[str, Any]:
    """The engine's (and the manifest's) dynamic section: ranges, symbolic shapes and attributes, profiles."""
    shapes = {name: symbolic.to_text(list(net.tensors[name].shape)) for name in _activations(net)
              if symbolic.is_symbolic(net.tensors[name].shape)}
    attrs = {layer.name: {k: symbolic.to_text(list(v) if isinstance(v, tuple) else v)
                          for k, v in layer.attrs if symbolic.is_symbolic(v)}
             for layer in net.layers if symbolic.is_symbolic(dict(layer.attrs))}
    return {
        "timing": [w for w in ("min", "opt", "max") if w in timing],
        "symbols": {sym: [int(lo), int(hi)] for sym, (lo, hi) in sorted(ranges.items())},
        "shapes": dict(sorted(shapes.items())),
        "attrs": dict(sorted(attrs.items())),
        "profiles": [{"inputs": {name: [list(s) for s in p.get_shape(name)] for name in sorted(dynamic_inputs)},
                      "tactics": [dict(t) for t in chosen[i]]} for i, p in enumerate(profiles)],
    }


def _time_at_other_shapes(selector: AlgorithmSelector, ctx: AlgorithmContext, allowed: Sequence[Candidate],
                          backend: Backend, timing: m.TimingConfig, seed: int) -> int:
    """A dynamic build's candidates timed at the profile's min and/or max shapes too (``profile_timing``): each
    candidate's median becomes the sum of its medians (its samples stay those of opt, which the timing cache keys
    by); returns how many timings were measured. Nothing for a fixed-shape build."""
    specs = selector.timing_specs(ctx) if isinstance(selector, _ProfileSelector) else []
    measured = 0
    for _, other in specs:
        copies = [dataclasses.replace(c, samples_ns=[], median_ns=None, timing_source=None,
                                      workspace_bytes=c.tactic.workspace_bytes(other)) for c in allowed]
        measured += time_candidates(other, copies, backend, timing, seed, lambda c: None, lambda c, s: None)
        for c, copy in zip(allowed, copies):
            c.median_ns = (c.median_ns or 0) + (copy.median_ns or 0)
    return measured


class _ProfileSelector(AlgorithmSelector):
    """The selector of one profile's build at its opt shapes: offers the wrapped selector only the candidates that
    are eligible at the profile's min and max shapes too, so the chosen tactic runs every shape in between."""

    def __init__(self, inner: AlgorithmSelector, registry: TacticRegistry, index: int, low: Network,
                 high: Network, also_timed: Sequence[str] = ()) -> None:
        self.inner, self.registry, self.index, self.low, self.high = inner, registry, index, low, high
        self.also_timed = tuple(also_timed)

    def timing_specs(self, context: AlgorithmContext) -> list[tuple[str, LayerSpec]]:
        """The layer at the profile's other shapes its candidates are also timed at (``profile_timing``)."""
        return [(which, layer_spec(self.low if which == "min" else self.high, context.index))
                for which in self.also_timed]

    @property
    def requires_timing(self) -> bool:  # type: ignore[override]
        return self.inner.requires_timing

    def begin(self, plan: BuildPlan) -> None:
        self.inner.begin(plan)

    def select(self, context: AlgorithmContext, candidates: Sequence[Any]) -> Sequence[Any]:
        fits: list[tuple[Any, str | None]] = []
        refused: list[tuple[Any, str | None]] = []
        for candidate in candidates:
            tactic = self.registry.resolve(context.op, {"family": candidate.family, "name": candidate.name,
                                                        "version": candidate.version,
                                                        "code_sha256": candidate.code_sha256,
                                                        "parameters": dict(candidate.parameters)})
            why = next((f"at the profile's {which} shapes: {reason}" for which, network in
                        (("min", self.low), ("max", self.high))
                        if (reason := tactic.ineligibility(layer_spec(network, context.index))) is not None), None)
            (refused if why else fits).append((candidate, why))
        if not fits:
            listing = "; ".join(f"{c.label}: {why}" for c, why in refused)
            raise BuildError(f"layer {context.name!r} ({context.op}): no tactic runs every shape of optimization "
                             f"profile {self.index}: {listing}; narrow the profile")
        return self.inner.select(context, [c for c, _ in fits])

    def pinned_parameters(self, context: AlgorithmContext, candidate: Any) -> Any:
        return self.inner.pinned_parameters(context, candidate)

    def report(self, context: AlgorithmContext, chosen: Any) -> None:
        self.inner.report(context, chosen)

    def end(self, pinned: m.Pinned, engine_sha256: str) -> None:
        self.inner.end(pinned, engine_sha256)

    @property
    def untimed_reason(self) -> str:
        return str(getattr(self.inner, "untimed_reason", f"first allowed by {type(self.inner).__name__}"))


def _allowed(selector: AlgorithmSelector, ctx: AlgorithmContext, candidates: list[Candidate]) -> list[Candidate]:
    """Ask the selector which eligible candidates this layer may use; the others become excluded."""
    eligible = [c for c in candidates if c.status == "eligible"]
    if not eligible:
        listing = "; ".join(f"{c.shown}: {c.reason}" for c in candidates) or "no tactic implements this op"
        raise BuildError(f"layer {ctx.name!r} ({ctx.op}) has no eligible tactic: {listing}")
    offered = [c.algorithm() for c in eligible]
    # keyed by label and parameters: the variants of a tactic that chooses its parameters per layer share a label
    by_key = {a.key: c for a, c in zip(offered, eligible)}
    picked = list(selector.select(ctx, offered))
    unknown = [a.shown for a in picked if a.key not in by_key]
    if unknown or len({a.key for a in picked}) != len(picked):
        raise BuildError(f"{type(selector).__name__}.select returned {unknown or 'duplicate'} candidates for layer "
                         f"{ctx.name!r}; it must return a subset of the candidates it was given")
    if not picked:
        raise BuildError(f"{type(selector).__name__} allowed none of the candidates for layer {ctx.name!r} "
                         f"({ctx.op}): {', '.join(a.shown for a in offered)}")
    allowed = [by_key[a.key] for a in picked]
    for c in eligible:
        if c not in allowed:
            c.status, c.reason = "excluded", f"not allowed by the algorithm selector ({type(selector).__name__})"
    return allowed


def _config_record(config: BuilderConfig, backend: str) -> m.BuildConfigRecord:
    warmup, iterations, runs_per_sample = config.timing_for(backend)
    return m.BuildConfigRecord(
        backend=backend,  # type: ignore[arg-type]
        timing=m.TimingConfig(warmup=warmup, iterations=iterations, runs_per_sample=runs_per_sample),
        seed=config.seed, max_workspace_bytes=config.max_workspace_bytes, determinism=config.determinism,
        tactic_sources=sorted(config.tactic_sources) if config.tactic_sources is not None else None,
        passes=[m.PassRecord(name=n, version=v) for n, v in pass_versions(config.effective_passes)],
        tie_band=config.tie_band, precision=config.precision, cuda_graph=config.cuda_graph,
    )


def _tensor(net: Network, name: str) -> m.TensorRecord:
    info = net.tensors[name]
    return m.TensorRecord(name=name, shape=list(info.shape), dtype=info.dtype)


def _pinned_input(net: Network, name: str) -> m.PinnedInputRecord:
    return m.PinnedInputRecord(**_tensor(net, name).model_dump(), sha256=net.constant_digest(name))


def _layer_fields(net: Network, index: int, keys: Sequence[str]) -> dict[str, Any]:
    """What the manifest records of a layer whichever tactic it gets (a replay compares these before choosing)."""
    layer = net.layers[index]
    return {"name": layer.name, "op": layer.op, "key": keys[index], "attrs": attrs_to_json(layer.attrs),
            "inputs": [_tensor(net, t) for t in layer.inputs], "outputs": [_tensor(net, t) for t in layer.outputs],
            "onnx_nodes": list(layer.origin or (layer.name,))}


def _nonfinite_weights(net: Network) -> list[m.NonfiniteWeightRecord]:
    """The engine's floating-point constants that hold NaN or infinities, in name order, with the counts."""
    records = []
    for name in sorted(net.constants):
        array = net.constants[name]
        if not is_float(dtype_name(array.dtype)):
            continue
        try:
            finite = bool(np.isfinite(array).all())
        except TypeError:  # a narrow float type without the ufunc: count on float32 values
            array = array.astype(np.float32)
            finite = bool(np.isfinite(array).all())
        if finite:
            continue
        records.append(m.NonfiniteWeightRecord(
            name=name, nan=int(np.count_nonzero(np.isnan(array))),
            posinf=int(np.count_nonzero(np.isposinf(array))), neginf=int(np.count_nonzero(np.isneginf(array)))))
    return records


def _nonfinite_message(records: Sequence[m.NonfiniteWeightRecord]) -> str:
    def counts(r: m.NonfiniteWeightRecord) -> str:
        parts = [f"{n} {what}" for n, what in ((r.nan, "NaN"), (r.posinf, "+inf"), (r.neginf, "-inf")) if n]
        return f"{r.name!r} ({', '.join(parts)})"

    listed = ", ".join(counts(r) for r in records[:10])
    more = f" and {len(records) - 10} more" if len(records) > 10 else ""
    return (f"{len(records)} weight(s) hold non-finite values: {listed}{more}. The engine is built with them as "
            "they are (its outputs will likely be NaN or infinite); the manifest's evidence lists them under "
            "nonfinite_weights. Check the model's export or training if they are not intended")


def _size(n: int) -> str:
    """``n bytes``, with the figure in the largest binary unit it reaches."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n} bytes ({n / scale:.2f} {unit})"
    return f"{n} bytes"


@contextlib.contextmanager
def _out_of_memory(what: str, cap: tuple[int | None, str]) -> Iterator[None]:
    """A MemoryError while ``what`` is a ResourceError that says so: the cap, checked before, was not what the
    machine could really give."""
    try:
        yield
    except MemoryError:
        limit = f"{cap[0]} bytes, {cap[1]}" if cap[0] is not None else cap[1]
        raise ResourceError(f"the build ran out of memory while {what} (MemoryError), although it fits the cap "
                            f"({limit}): less memory is available than that. Free memory, or set --max-memory "
                            "(BuilderConfig.max_memory) to what is really available, so that a build that cannot "
                            "fit is refused before any work") from None


def memory_cap(config: BuilderConfig, backend: Backend) -> tuple[int | None, str]:
    """The most memory a build may need at once, and where that figure comes from: ``config.max_memory``, else the
    runtime's default (the device's total memory on cuda; on cpu the least of the host's physical memory and this
    process's cgroup and address-space limits); None where the machine says none of them."""
    if config.max_memory is not None:
        return config.max_memory, "the cap set by --max-memory (BuilderConfig.max_memory)"
    return default_max_memory(backend)  # the runtime's default: a build runs the engine it makes


def _array_bytes(shape: Sequence[int], dtype: str) -> int:
    return int(np.prod(shape, dtype=object)) * itemsize(dtype)  # Python integers: no overflow on absurd shapes


@dataclass(frozen=True)
class BuildMemory:
    """The most memory a build needs at once: the weights, plus the larger of timing one layer (its activation
    inputs, outputs and the largest workspace among its candidates; only when the selector times) and the golden
    run (one execution context's activation arena, workspace and cuBLAS workspace, the engine's inputs and outputs,
    and a copy of every layer's outputs, which the golden vectors digest)."""

    weights: int
    timing: int
    timing_layer: str
    context: int
    bindings: int
    trace: int

    @property
    def golden(self) -> int:
        return self.context + self.bindings + self.trace

    @property
    def total(self) -> int:
        return self.weights + max(self.timing, self.golden)

    @staticmethod
    def _common(net: Network, layers: Sequence[tuple[AlgorithmContext, LayerSpec, list[Candidate]]],
                timed: bool) -> dict[str, Any]:
        weights = sum(int(a.nbytes) for a in net.constants.values())
        timing, timing_layer = 0, ""
        if timed:
            for ctx, spec, cands in layers:
                need = (sum(_array_bytes(spec.inputs[i].shape, spec.inputs[i].dtype) for i in spec.activation_inputs)
                        + sum(_array_bytes(o.shape, o.dtype) for o in spec.outputs)
                        + max((c.workspace_bytes for c in cands if c.status == "eligible"), default=0))
                if need > timing:
                    timing, timing_layer = need, ctx.name
        bindings = sum(_array_bytes(net.tensors[t.name].shape, net.tensors[t.name].dtype)
                       for t in (*net.inputs, *net.outputs))
        trace = sum(-(-_array_bytes(net.tensors[t].shape, net.tensors[t].dtype) // 64) * 64
                    for layer in net.layers for t in layer.outputs)
        return {"weights": weights, "timing": timing, "timing_layer": timing_layer, "bindings": bindings,
                "trace": trace}

    @classmethod
    def estimate(cls, net: Network, layers: Sequence[tuple[AlgorithmContext, LayerSpec, list[Candidate]]],
                 timed: bool) -> BuildMemory:
        """Before tactics are chosen: the arena as if each layer got its leanest eligible tactic (the least
        workspace, aliasing its input where one can): a lower bound of what the chosen tactics will need."""
        eligible = [[c for c in cands if c.status == "eligible"] for _, _, cands in layers]
        sizes = {t: _array_bytes(net.tensors[t].shape, net.tensors[t].dtype) for t in _activations(net)}
        uses = [LayerUse(layer.inputs, layer.outputs,
                         any(getattr(c.tactic, "aliases_input", False) for c in cands),
                         min((c.workspace_bytes for c in cands), default=0))
                for layer, cands in zip(net.layers, eligible)]
        plan = plan_memory(sizes, uses, [t.name for t in net.inputs], [t.name for t in net.outputs])
        return cls(context=plan.context_bytes, **cls._common(net, layers, timed))

    @classmethod
    def exact(cls, net: Network, layers: Sequence[tuple[AlgorithmContext, LayerSpec, list[Candidate]]],
              plan: MemoryPlan, timed: bool) -> BuildMemory:
        return cls(context=plan.context_bytes, **cls._common(net, layers, timed))


def _check_memory(need: BuildMemory, cap: tuple[int | None, str], when: str) -> None:
    limit, source = cap
    if limit is None or need.total <= limit:
        return
    parts = [f"{_size(need.weights)} of weights"]
    if need.golden >= need.timing:
        parts += [f"{_size(need.context)} of activations and workspace (one execution context's arena, {when})",
                  f"{_size(need.bindings)} of the engine's inputs and outputs",
                  f"{_size(need.trace)} to keep every layer's outputs for the golden vectors"]
    else:
        parts.append(f"{_size(need.timing)} to time layer {need.timing_layer!r} (its inputs, outputs and largest "
                     "workspace)")
    raise ResourceError(
        f"the build needs {_size(need.total)} of memory at once, over {source}, {_size(limit)}: "
        f"{', '.join(parts)}. Nothing was allocated for it. Build with smaller input shapes (--input-shape), or "
        "raise the cap with --max-memory if the machine really has that much memory")


def _model_record(net: Network) -> m.ModelRecord:
    src = dict(net.source or {})
    return m.ModelRecord(
        sha256=src.get("sha256"), size_bytes=src.get("size_bytes"), structural_hash=net.structural_hash,
        opset=src.get("opset"), ir_version=src.get("ir_version"), producer=src.get("producer"),
        graph_name=src.get("graph_name"), upgraded_from_opset=src.get("upgraded_from_opset"),
    )


def _candidate_record(c: Candidate) -> m.CandidateRecord:
    return m.CandidateRecord(
        tactic=m.TacticRef(**c.tactic.ref), status=c.status, reason=c.reason,  # type: ignore[arg-type]
        source=c.tactic.source, determinism=c.tactic.determinism.value, workspace_bytes=c.workspace_bytes,
        samples_ns=c.samples_ns, median_ns=c.median_ns, timing_source=c.timing_source,  # type: ignore[arg-type]
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
    return plan_memory(sizes, uses, [t.name for t in net.inputs], [t.name for t in net.outputs],
                       library_bytes=library_workspace_bytes(tactics))


def _execution(config: BuilderConfig, backend: Backend, net: Network, tactics: Sequence[Tactic]) -> m.ExecutionRecord:
    """Whether contexts of this engine run as CUDA graphs by default, and why (or why not)."""
    if backend.name != "cuda":
        return m.ExecutionRecord(cuda_graph=False, reason=f"the {backend.name} backend has no CUDA graphs")
    if not config.cuda_graph:
        return m.ExecutionRecord(cuda_graph=False, reason="the build config turned CUDA graphs off")
    eager = [f"{layer.name} ({shown_label(tactic)})" for layer, tactic in zip(net.layers, tactics)
             if not tactic.capturable]
    if eager:
        more = f" and {len(eager) - 5} more" if len(eager) > 5 else ""
        return m.ExecutionRecord(cuda_graph=False, reason=f"layers {', '.join(eager[:5])}{more} use tactics that "
                                 "are not launch plans, so the run cannot be captured")
    return m.ExecutionRecord(cuda_graph=True, reason=f"all {len(tactics)} layers are launch plans: contexts capture "
                             "the run on first use and replay it")


def _kernel_sources(tactics: Sequence[Tactic], specs: Sequence[LayerSpec],
                    backend: Backend) -> list[m.KernelSourceRecord | m.LegacyKernelSourceRecord]:
    """The CUDA kernel symbols the chosen tactics launch (their ``cuda_kernels``), once per element type they
    build them for: each symbol's source closure digest, the full NVRTC options and the digest of the symbol's own
    sections of the cubin (their Python, and generated kernels, are covered by each tactic's ``code_sha256``)."""
    records: list[m.KernelSourceRecord | m.LegacyKernelSourceRecord] = []
    builds = {(f, s, t.kernel_dtype(spec)) for t, spec in zip(tactics, specs)
              for f, symbols in t.cuda_kernels.items() for s in symbols}
    for f, symbol, dtype in sorted(builds):
        compiled = cuda_module(backend, f, dtype)
        records.append(m.KernelSourceRecord(file=f, symbol=symbol, dtype=dtype,
                                            source_sha256=kernel_source_sha256(f, symbol),
                                            compile_options=list(compiled.options),
                                            cubin_sha256=compiled.symbol_sha256(symbol)))
    return records


def _engine_attr(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _engine_header(net: Network, tactics: Sequence[Tactic], chosen: Sequence[Candidate], plan: MemoryPlan,
                   backend: Backend, cuda_graph: bool, manifest: bytes) -> dict[str, Any]:
    def tensor(name: str) -> dict[str, Any]:
        info = net.tensors[name]
        return {"name": name, "shape": list(info.shape), "dtype": info.dtype}

    declared = dict((net.source or {}).get("declared_inputs") or {})

    return {
        "format": "reprobuild-engine",
        "backend": backend.name,
        "name": net.name,
        "inputs": [tensor(t.name) for t in net.inputs],
        "pinned_inputs": [{**tensor(t), "sha256": net.constant_digest(t)} for t in net.pinned_inputs],
        "outputs": [tensor(t.name) for t in net.outputs],
        "activations": [tensor(t) for t in _activations(net)],
        "layers": [
            {"name": layer.name, "op": layer.op, "attrs": {k: _engine_attr(v) for k, v in layer.attrs},
             "inputs": list(layer.inputs), "outputs": list(layer.outputs), "tactic": tactics[i].ref,
             "workspace_bytes": chosen[i].workspace_bytes}
            for i, layer in enumerate(net.layers)
        ],
        "attribute_schemas": {op: attribute_schema(get_op(op)) for op in sorted({layer.op for layer in net.layers})},
        "memory": {"alignment": plan.alignment, "activation_bytes": plan.activation_bytes,
                   "workspace_offset": plan.workspace_offset, "workspace_bytes": plan.workspace_bytes,
                   "library_bytes": plan.library_bytes, "offsets": dict(plan.offsets)},
        "cuda_graph": cuda_graph,
        "manifest": manifest,
        "manifest_sha256": sha256_hex(manifest),
        "declared_inputs": {t.name: list(declared[t.name]) for t in net.inputs if t.name in declared},
    }



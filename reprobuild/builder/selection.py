"""Per-layer tactic selection: exclude what cannot or may not run, let the selector narrow the rest, time what
it allows, and choose.

Timing runs each allowed tactic on seeded random inputs of the layer's real shapes (never zeros): ``warmup``
untimed runs, then ``iterations`` timed samples (each the mean of ``runs_per_sample`` runs; on CUDA a captured
graph of them); the median (the lower median for even counts) is the figure. A candidate whose fastest of three
single warm runs takes over ``STOP_FACTOR`` times the fastest median so far keeps that run as its only sample:
it cannot win, and timing a slow kernel in full would dominate the build.
Noise-robust choice: every candidate whose median is within the tie band of the fastest (``tie_band``, a
fraction) is a near-tie, and among near-ties the selector's preference order decides (by default the tactics'
stable priority), so timing noise does not flip choices between builds.

A tactic that chooses its parameters per layer (``per_layer_parameters``: a vendor library's algorithms) is not one
candidate but one per variant it offers for the layer (``Tactic.variants``, asked on the device it is timed on, in
the tactic's own order), each excluded or not on its own (a split-K variant may be nondeterministic while its
siblings are not, and each needs its own workspace) and timed as a tactic of its own. A selector that pins a
variant (a replay: ``AlgorithmSelector.pinned_parameters``) gets it as a candidate even when ``variants`` no longer
lists it, bound by ``with_parameters``; values the tactic cannot run with make that candidate excluded, saying why.
"""

from __future__ import annotations

import hashlib
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reprobuild.builder.config import BuilderConfig
from reprobuild.builder.selector import AlgorithmCandidate
from reprobuild.core.dtypes import np_dtype
from reprobuild.core.errors import BuildError, TacticMismatchError
from reprobuild.engine.golden import sample
from reprobuild.ir import Network
from reprobuild.kernels.backend import Backend
from reprobuild.kernels.identity import shown_label, variant_label
from reprobuild.kernels.launch import timer
from reprobuild.kernels.tactic import Determinism, LayerSpec, Tactic, TensorSig, precision_of
from reprobuild.manifest.models import TimingConfig


@dataclass(eq=False)
class Candidate:
    tactic: Tactic
    status: str = "eligible"  # eligible -> excluded | chosen | lost
    reason: str = ""
    workspace_bytes: int = 0
    samples_ns: list[int] = field(default_factory=list)
    median_ns: int | None = None
    timing_source: str | None = None  # "measured" or "cache"
    precision: str | None = None  # the arithmetic it would compute this layer in (kernels.tactic.precision_of)

    def algorithm(self) -> AlgorithmCandidate:
        t = self.tactic
        return AlgorithmCandidate(
            family=t.family, name=t.name, version=t.version, code_sha256=t.code_sha256,
            parameters=dict(t.parameters), workspace_bytes=self.workspace_bytes, determinism=t.determinism.value,
            source=t.source, priority=t.priority, median_ns=self.median_ns, samples_ns=tuple(self.samples_ns),
            precision=self.precision, per_layer_parameters=t.per_layer_parameters,
        )

    @property
    def shown(self) -> str:
        """The tactic's name, with the bound parameters of a variant (``cublaslt [algo=6 tile=128x128]``): what
        logs and reasons call it (a fixed-parameter tactic is named as before)."""
        t = self.tactic
        return variant_label(t.name, t.parameters) if t.per_layer_parameters else t.name


def layer_spec(network: Network, index: int) -> LayerSpec:
    layer = network.layers[index]

    def sig(name: str) -> TensorSig:
        info = network.tensors[name]
        return TensorSig(info.shape, info.dtype)

    return LayerSpec(
        name=layer.name, op=layer.op, attrs=layer.attributes,
        inputs=tuple(sig(t) for t in layer.inputs), outputs=tuple(sig(t) for t in layer.outputs),
        constants={i: network.constants[t] for i, t in enumerate(layer.inputs) if t in network.constants},
    )


def layer_seed(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little")


def random_inputs(spec: LayerSpec, seed: int) -> list[np.ndarray]:
    """Activation inputs of the layer's shapes and dtypes, reproducible from the seed (``golden.sample``)."""
    rng = np.random.default_rng(seed)
    return [sample(rng, spec.inputs[i].shape, spec.inputs[i].dtype) for i in spec.activation_inputs]


def layer_exclusion(tactic: Tactic, spec: LayerSpec, config: BuilderConfig,
                    compute_capability: str | None = None) -> str | None:
    """Why the tactic may not run this layer at all (None if it may), whichever parameters it is bound to: what it
    supports, the device, the enabled tactic sources and the precision."""
    reason = tactic.ineligibility(spec)
    if reason is not None:
        return reason
    reason = tactic.device_ineligibility(compute_capability)
    if reason is not None:
        return reason
    if config.tactic_sources is not None and tactic.source not in config.tactic_sources:
        return f"tactic source {tactic.source} is not enabled (enabled: {', '.join(config.tactic_sources)})"
    if tactic.math == "tf32" and config.precision == "fp32":
        return ("uses TF32 tensor cores (10-bit mantissa inputs), and the build's precision is fp32, strict; "
                "build with --precision tf32 to allow it")
    return None


def exclusion(tactic: Tactic, spec: LayerSpec, config: BuilderConfig,
              compute_capability: str | None = None) -> tuple[str | None, int]:
    """Why the tactic (a variant: bound to its parameters) may not be considered for this layer (None if it may),
    and the workspace it needs, on a GPU of ``compute_capability`` (``"90"``; None on the CPU)."""
    reason = layer_exclusion(tactic, spec, config, compute_capability)
    if reason is not None:
        return reason, 0
    if config.determinism == "run_to_run" and tactic.determinism is Determinism.NONE:
        return "not run-to-run deterministic, and the build requires run_to_run determinism", 0
    workspace = tactic.workspace_bytes(spec)
    if workspace > config.max_workspace_bytes:
        return f"needs {workspace} workspace bytes, over the limit of {config.max_workspace_bytes}", workspace
    return None, workspace


#: For a tactic that chooses its parameters per layer: the values a selector pins for it on this layer, or None.
Pinned = Callable[[Tactic], Mapping[str, Any] | None]


def plan_candidates(spec: LayerSpec, tactics: Sequence[Tactic], config: BuilderConfig, backend: Backend,
                    compute_capability: str | None = None, pinned: Pinned | None = None) -> list[Candidate]:
    """The layer's candidates, in the tactics' order, each eligible or excluded with its reason: one per tactic,
    or one per variant of a tactic that chooses its parameters per layer (:func:`variant_candidates`)."""
    candidates = []
    for tactic in tactics:
        if tactic.per_layer_parameters:
            candidates += variant_candidates(tactic, spec, config, backend, compute_capability,
                                             pinned(tactic) if pinned is not None else None)
        else:
            candidates.append(_candidate(tactic, spec, config, compute_capability))
    if config.cuda_graph and backend.name == "cuda":
        # One opaque layer would make the whole engine run eagerly: prefer any tactic that can be captured.
        capturable = [c for c in candidates if c.status == "eligible" and c.tactic.capturable]
        for c in candidates:
            if capturable and c.status == "eligible" and not c.tactic.capturable:
                c.status = "excluded"
                c.reason = (f"cannot be captured in a CUDA graph (an opaque callable, not a launch plan), and "
                            f"{capturable[0].shown} can run this layer; build with cuda_graph off to "
                            "consider it")
    return candidates


def _candidate(tactic: Tactic, spec: LayerSpec, config: BuilderConfig, compute_capability: str | None) -> Candidate:
    reason, workspace = exclusion(tactic, spec, config, compute_capability)
    return Candidate(tactic, "excluded" if reason else "eligible", reason or "", workspace,
                     precision=precision_of(tactic, spec))


def variant_candidates(tactic: Tactic, spec: LayerSpec, config: BuilderConfig, backend: Backend,
                       compute_capability: str | None = None,
                       pinned: Mapping[str, Any] | None = None) -> list[Candidate]:
    """One candidate per variant a per-layer tactic offers for the layer (asked inside ``backend.activate()``, in
    its own order; a variant offered again with the same values is the first one, since the values are all a
    replay binds), each excluded or not on its own; and, when a selector pins values the variants lack, that
    variant too (bound by ``with_parameters``; excluded with the tactic's reason if it refuses them). A tactic
    that cannot run the layer, or offers nothing, is one excluded candidate."""
    precision = precision_of(tactic, spec)
    reason = layer_exclusion(tactic, spec, config, compute_capability)
    if reason is not None:
        return [Candidate(tactic if pinned is None else tactic.carrying(pinned), "excluded", reason,
                          precision=precision)]
    try:
        with backend.activate():
            variants = list(tactic.variants(spec, backend))
    except BuildError:
        raise
    except Exception as exc:
        raise BuildError(f"tactic {tactic.label} failed to list its variants for layer {spec.name!r} ({spec.op}): "
                         f"{type(exc).__name__}: {exc}") from exc
    candidates: list[Candidate] = []
    seen: list[dict[str, Any]] = []
    for variant in variants:
        if (variant.family, variant.name, variant.version) != (tactic.family, tactic.name, tactic.version):
            raise BuildError(f"tactic {tactic.label} offered {variant.label} among its variants for layer "
                             f"{spec.name!r}; a variant is the tactic itself, bound to its parameters")
        if dict(variant.parameters) in seen:  # one variant, whatever else tells them apart: what a replay binds
            continue
        seen.append(dict(variant.parameters))
        candidates.append(_candidate(variant, spec, config, compute_capability))
    if pinned is not None and dict(pinned) not in seen:
        try:
            bound = tactic.with_parameters(pinned)
        except TacticMismatchError as exc:
            candidates.append(Candidate(tactic.carrying(pinned), "excluded", str(exc), precision=precision))
        else:
            candidates.append(_candidate(bound, spec, config, compute_capability))
    if not candidates:
        return [Candidate(tactic, "excluded", "offers no variant for this layer (its variants() listed none)",
                          precision=precision)]
    return candidates


#: A candidate whose probe (the fastest of three warm runs) takes this many times the fastest median so far is not
#: timed further (TensorRT drops such tactics early too): it cannot win, and a slow kernel timed in full would
#: dominate the build.
STOP_FACTOR = 4.0


def time_candidates(spec: LayerSpec, candidates: Sequence[Candidate], backend: Backend, timing: TimingConfig,
                    seed: int, cached: Callable[[Candidate], list[int] | None],
                    store: Callable[[Candidate, list[int]], None]) -> int:
    """Fill in each candidate's samples, from the cache where it has them; returns how many were measured.

    On CUDA a launch plan is bound once and timed as a CUDA graph of ``runs_per_sample`` runs between two
    events, so a microsecond kernel's time is the GPU's, not Python's."""
    measured = 0
    todo = []
    best: int | None = None
    for c in candidates:
        samples = cached(c)
        # (a candidate stopped early was stored with fewer samples: that too is a measurement under this config)
        if samples is not None and 1 <= len(samples) <= timing.iterations:
            c.samples_ns, c.timing_source = samples, "cache"
            median = int(statistics.median_low(samples))
            best = median if best is None else min(best, median)
        else:
            todo.append(c)
    if todo:
        host_inputs = random_inputs(spec, seed)
        with backend.activate():
            inputs = [backend.asarray(x) for x in host_inputs]
            outputs: list[Any] = [backend.xp.empty(o.shape, dtype=np_dtype(o.dtype)) for o in spec.outputs]
            for c in todo:
                workspace = backend.empty_bytes(max(c.workspace_bytes, 1))
                try:
                    kernel = c.tactic.prepare(spec, backend)
                    # three single warm runs first: a candidate far slower than the best stops there (the
                    # fastest of three, so that one hiccup of the machine does not stop a contender)
                    probe = [] if best is None else [min(timer(backend, kernel, inputs, outputs, workspace, 1, 1)(3))]
                    if best is not None and probe and probe[0] > STOP_FACTOR * best:
                        c.samples_ns = probe
                    else:
                        sample = timer(backend, kernel, inputs, outputs, workspace, timing.warmup,
                                       timing.runs_per_sample)
                        c.samples_ns = sample(timing.iterations)
                except BuildError:
                    raise
                except Exception as exc:
                    raise BuildError(f"tactic {shown_label(c.tactic)} failed on layer {spec.name!r} ({spec.op}): "
                                     f"{type(exc).__name__}: {exc}") from exc
                c.timing_source = "measured"
                median = int(statistics.median_low(c.samples_ns))
                best = median if best is None else min(best, median)
                store(c, c.samples_ns)
                measured += 1
    for c in candidates:
        c.median_ns = int(statistics.median_low(c.samples_ns))
    return measured


def _ms(ns: int | None) -> str:
    return f"{(ns or 0) / 1e6:.4f} ms"


def choose(allowed: Sequence[Candidate], timed: bool, tie_band: float, untimed_reason: str) -> Candidate:
    """Pick from ``allowed`` (in preference order) and give every one of them its status and reason."""
    if not timed:
        chosen = allowed[0]
        chosen.status, chosen.reason = "chosen", untimed_reason
        for c in allowed[1:]:
            c.status, c.reason = "lost", f"allowed, but after {chosen.shown} in the selector's preference order"
        return chosen
    fastest = min(allowed, key=lambda c: (c.median_ns or 0))
    limit = (fastest.median_ns or 0) * (1.0 + tie_band)
    near = [c for c in allowed if (c.median_ns or 0) <= limit]
    chosen = near[0]
    chosen.status = "chosen"
    band = f"{tie_band:.1%} tie band"
    if chosen is fastest:
        chosen.reason = f"fastest median {_ms(chosen.median_ns)}"
        if len(near) > 1:
            chosen.reason += f"; {len(near) - 1} other(s) within the {band} come later in preference order"
    else:
        chosen.reason = (f"median {_ms(chosen.median_ns)}, within the {band} of the fastest "
                         f"({fastest.shown}, {_ms(fastest.median_ns)}), and first in preference order")
    for c in allowed:
        if c is chosen:
            continue
        c.status = "lost"
        ratio = (c.median_ns or 0) / max(fastest.median_ns or 1, 1)
        c.reason = (f"median {_ms(c.median_ns)}, within the {band} but after {chosen.shown} in preference "
                    "order" if c in near else f"median {_ms(c.median_ns)}, {ratio:.2f}x the fastest")
    return chosen

"""Per-layer tactic selection: exclude what cannot or may not run, time the rest, keep the fastest.

Timing runs each eligible tactic on seeded random inputs of the layer's real shapes (never zeros): ``warmup``
untimed runs, then ``iterations`` timed runs; the median (lower median for even counts) decides. Equal medians
are broken by the tactic's stable priority, then name and version, never by discovery order.
"""

from __future__ import annotations

import functools
import hashlib
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reprobuild.builder.config import BuilderConfig
from reprobuild.errors import BuildError
from reprobuild.ir import Network
from reprobuild.kernels.backend import Backend
from reprobuild.kernels.tactic import Determinism, LayerSpec, Tactic, TensorSig


@dataclass
class Candidate:
    tactic: Tactic
    status: str = "excluded"
    reason: str = ""
    workspace_bytes: int = 0
    samples_ns: list[int] = field(default_factory=list)
    median_ns: int | None = None

    @property
    def order(self) -> tuple[int, int, str, int]:
        return (self.median_ns or 0, self.tactic.priority, self.tactic.name, self.tactic.version)


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
    """Standard-normal activation inputs of the layer's shapes, reproducible from the seed."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(spec.inputs[i].shape).astype(spec.inputs[i].dtype) for i in spec.activation_inputs]


def exclusion(tactic: Tactic, spec: LayerSpec, config: BuilderConfig) -> tuple[str | None, int]:
    """Why the tactic may not be timed for this layer (None if it may), and the workspace it would need."""
    reason = tactic.ineligibility(spec)
    if reason is not None:
        return reason, 0
    if config.tactic_sources is not None and tactic.source not in config.tactic_sources:
        return f"tactic source {tactic.source} is not enabled (enabled: {', '.join(config.tactic_sources)})", 0
    if config.determinism == "run_to_run" and tactic.determinism is Determinism.NONE:
        return "not run-to-run deterministic, and the build requires run_to_run determinism", 0
    workspace = tactic.workspace_bytes(spec)
    if workspace > config.max_workspace_bytes:
        return f"needs {workspace} workspace bytes, over the limit of {config.max_workspace_bytes}", workspace
    return None, workspace


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.4f} ms"


def select_tactic(spec: LayerSpec, tactics: Sequence[Tactic], backend: Backend, config: BuilderConfig,
                  seed: int) -> tuple[Candidate, list[Candidate]]:
    """Time every eligible tactic and choose one; every candidate comes back with its status and reason."""
    candidates = []
    for tactic in tactics:
        reason, workspace = exclusion(tactic, spec, config)
        candidates.append(Candidate(tactic, "excluded" if reason else "eligible", reason or "", workspace))
    eligible = [c for c in candidates if c.status == "eligible"]
    if not eligible:
        listing = "; ".join(f"{c.tactic.name}: {c.reason}" for c in candidates) or "no tactic implements this op"
        raise BuildError(f"layer {spec.name!r} ({spec.op}) has no eligible tactic on the {backend.name} backend: "
                         f"{listing}")
    warmup, iterations = config.timing_for(backend.name)
    host_inputs = random_inputs(spec, seed)
    with backend.activate():
        inputs = [backend.asarray(x) for x in host_inputs]
        outputs: list[Any] = [backend.xp.empty(o.shape, dtype=o.dtype) for o in spec.outputs]
        for c in eligible:
            workspace = backend.empty_bytes(max(c.workspace_bytes, 1))
            try:
                kernel = c.tactic.prepare(spec, backend)
                c.samples_ns = backend.time_runs(functools.partial(kernel, inputs, outputs, workspace), warmup,
                                                 iterations)
            except BuildError:
                raise
            except Exception as exc:
                raise BuildError(f"tactic {c.tactic.label} failed on layer {spec.name!r} ({spec.op}): "
                                 f"{type(exc).__name__}: {exc}") from exc
            c.median_ns = int(statistics.median_low(c.samples_ns))
    ranked = sorted(eligible, key=lambda c: c.order)
    chosen = ranked[0]
    chosen.status = "chosen"
    ties = [c for c in ranked[1:] if c.median_ns == chosen.median_ns]
    chosen.reason = f"fastest median {_ms(chosen.median_ns or 0)}" + (
        f"; tied with {', '.join(c.tactic.name for c in ties)}, won on priority {chosen.tactic.priority}"
        if ties else "")
    for c in ranked[1:]:
        c.status = "lost"
        ratio = (c.median_ns or 0) / max(chosen.median_ns or 1, 1)
        c.reason = (f"median {_ms(c.median_ns or 0)}, {ratio:.2f}x the chosen tactic's"
                    if c.median_ns != chosen.median_ns else
                    f"same median {_ms(c.median_ns or 0)}, lost on priority {c.tactic.priority}")
    return chosen, candidates

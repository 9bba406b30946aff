"""The AlgorithmSelector, after TensorRT's ``IAlgorithmSelector``: a hook that decides, layer by layer, which
tactics the builder may use, and hears which one it chose.

``select(context, candidates)`` returns the allowed subset in preference order. When ``requires_timing`` is
true the builder times the allowed candidates and keeps the fastest, the earliest in preference order winning
among those within the tie band; when false it times nothing and takes the first allowed candidate. The default
selector allows everything in the tactics' stable priority order: the timing selector. Subclass it to force or
forbid tactics; ``ReplaySelector`` (``reprobuild.builder.replay``) forces a manifest's decisions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reprobuild.core.errors import UsageError
from reprobuild.kernels.identity import variant_label
from reprobuild.kernels.tactic import TensorSig
from reprobuild.manifest import models as m


@dataclass(frozen=True)
class AlgorithmContext:
    """A layer as a selector sees it."""

    index: int
    name: str
    op: str
    key: str  #: structural key (signature + occurrence), stable under renaming
    signature: str  #: the layer's signature digest: op, attributes, shapes, dtypes, weight digests
    inputs: tuple[TensorSig, ...]
    outputs: tuple[TensorSig, ...]
    attrs: Mapping[str, Any]


@dataclass(frozen=True)
class AlgorithmCandidate:
    """A tactic by value, with its timing once measured."""

    family: str
    name: str
    version: int
    code_sha256: str
    parameters: Mapping[str, int | str]
    workspace_bytes: int
    determinism: str
    source: str
    priority: int
    median_ns: int | None = None
    samples_ns: tuple[int, ...] = field(default=(), repr=False)
    #: The arithmetic this tactic would compute the layer in (the layer's recorded ``precision``); None if unknown.
    precision: str | None = None
    #: Whether the tactic chooses its parameters per layer (``Tactic.per_layer_parameters``): then each of its
    #: variants (a vendor library's algorithms) is a candidate of its own, with its bound ``parameters``.
    per_layer_parameters: bool = False

    @property
    def label(self) -> str:
        return f"{self.family}.{self.name} v{self.version}"

    @property
    def key(self) -> tuple[str, tuple[tuple[str, int | str], ...]]:
        """What tells the candidates of a layer apart: the label, and the parameters (the variants of a tactic
        that chooses them per layer share its label)."""
        return self.label, tuple(sorted(self.parameters.items()))

    @property
    def shown(self) -> str:
        """The label, with the bound parameters of a variant (``gemm.cublaslt v1 [algo=6 tile=128x128]``)."""
        return variant_label(self.label, self.parameters) if self.per_layer_parameters else self.label

    def matches(self, ref: m.TacticRef | m.LegacyTacticRef) -> bool:
        """Whether this is the tactic a manifest records, by value (code digest and parameters included); never a
        tactic recorded by a schema-3 ``source_sha256``, which no installed identity can be compared with."""
        return isinstance(ref, m.TacticRef) and (
            self.family, self.name, self.version, self.code_sha256, dict(self.parameters)) == (
            ref.family, ref.name, ref.version, ref.code_sha256, dict(ref.parameters))


@dataclass(frozen=True)
class PlannedLayer:
    context: AlgorithmContext
    eligible: tuple[AlgorithmCandidate, ...]
    excluded: tuple[tuple[AlgorithmCandidate, str], ...]  #: with the reason each was excluded
    #: The fields of the layer's ``LayerRecord`` that do not depend on its tactic: name, op, key, attrs (in their
    #: JSON form), inputs and outputs (``TensorRecord``: name, shape, dtype) and onnx_nodes; what a replay compares
    #: before anything is chosen. Empty when unknown (a plan made by hand).
    record: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BuildPlan:
    """What the builder knows before choosing anything; given to ``AlgorithmSelector.begin``. The bindings are
    those the manifest will record (None when unknown: a plan made by hand)."""

    model: m.ModelRecord
    config: m.BuildConfigRecord
    environment: Mapping[str, str]
    layers: tuple[PlannedLayer, ...]
    inputs: tuple[m.TensorRecord, ...] | None = None
    outputs: tuple[m.TensorRecord, ...] | None = None
    pinned_inputs: tuple[m.PinnedInputRecord, ...] | None = None


class AlgorithmSelector:
    """The default, timing selector: every eligible tactic is allowed, in stable priority order, and timed."""

    requires_timing = True

    def begin(self, plan: BuildPlan) -> None:
        """Called once before any layer is decided; raise to refuse the build."""
        return None

    def select(self, context: AlgorithmContext,
               candidates: Sequence[AlgorithmCandidate]) -> Sequence[AlgorithmCandidate]:
        """The candidates this layer may use, most preferred first (a subset of ``candidates``)."""
        return candidates

    def pinned_parameters(self, context: AlgorithmContext,
                          tactic: AlgorithmCandidate) -> Mapping[str, int | str] | None:
        """The parameters this selector pins for ``tactic`` (one that chooses them per layer, given with its
        class's values) on this layer, or None (the default): the builder then adds that variant as a candidate
        even when the tactic's ``variants`` does not list it here (a newer library's heuristics), so that a replay
        forces exactly the recorded algorithm; values the tactic cannot run with make that candidate excluded,
        with the reason. Asked while the layers are planned, before ``begin``."""
        return None

    def report(self, context: AlgorithmContext, chosen: AlgorithmCandidate) -> None:
        """Called with each layer's decision, in layer order."""
        return None

    def end(self, pinned: m.Pinned, engine_sha256: str) -> None:
        """Called with the pinned manifest and the engine's digest once the engine is built; raise to refuse it."""
        return None

    def for_profile(self, index: int) -> AlgorithmSelector:
        """The selector of optimization profile ``index``'s build, in a dynamic build (each profile is built at
        its opt shapes; profile 0's last, and its engine is the one written): this one (the default) for every
        profile. A replay gives each profile the tactics the manifest records for it."""
        return self


TimingSelector = AlgorithmSelector


class ForcingSelector(AlgorithmSelector):
    """Force a tactic by layer name or by op type, e.g. ``{"fc3": "cpu_blocked_k", "Conv": "cpu_im2col_gemm"}``;
    a layer name wins over its op. Layers not named are left to timing. Refuses, before anything is timed, a
    key that matches no layer or a tactic that cannot run a layer it is forced on."""

    def __init__(self, forced: Mapping[str, str]) -> None:
        self.forced = dict(forced)

    def _wanted(self, context: AlgorithmContext) -> str | None:
        return self.forced.get(context.name) or self.forced.get(context.op)

    def begin(self, plan: BuildPlan) -> None:
        problems = []
        names = {layer.context.name for layer in plan.layers} | {layer.context.op for layer in plan.layers}
        problems += [f"{key!r} names no layer and no op of this network" for key in sorted(self.forced)
                     if key not in names]
        for layer in plan.layers:
            want = self._wanted(layer.context)
            if want is None or any(c.name == want for c in layer.eligible):
                continue
            excluded = [reason for c, reason in layer.excluded if c.name == want]
            why = excluded[0] if excluded else f"no tactic of that name for {layer.context.op}; eligible: " + \
                ", ".join(dict.fromkeys(c.name for c in layer.eligible))  # (a tactic's variants share a name)
            problems.append(f"layer {layer.context.name!r} ({layer.context.op}) cannot use {want}: {why}")
        if problems:
            raise UsageError("cannot force the tactics asked for:\n" + "\n".join(f"  - {p}" for p in problems))

    def select(self, context: AlgorithmContext,
               candidates: Sequence[AlgorithmCandidate]) -> Sequence[AlgorithmCandidate]:
        want = self._wanted(context)
        return candidates if want is None else [c for c in candidates if c.name == want]

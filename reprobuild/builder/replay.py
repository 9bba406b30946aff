"""Manifest replay: force every layer's recorded tactic, time nothing, and fail closed.

Before anything is built, ``ReplaySelector.begin`` compares the manifest with this build and raises one error
that lists **every** mismatch: the model record, the build config, the bindings, and the layers, matched by
structural key, one by one and in order: everything a pinned layer records that this build reproduces (name, op,
ONNX nodes, inputs and outputs with their shapes and dtypes, attributes, precision, the tactic by value,
workspace), and the layer order; then the environment under the chosen policy. After the build, ``end`` checks
that every recorded decision was honoured and that the rest of the pinned manifest (memory plan, execution,
kernel sources, golden vectors) is what this build produced, before comparing engine digests.

A tactic that chooses its parameters per layer (a vendor library's algorithm) is replayed with exactly the values
the manifest records (``pinned_parameters``): the builder adds that variant as a candidate even where this
machine's ``variants`` no longer lists it, and values the tactic cannot run with fail the replay, naming them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from reprobuild.builder.selector import (
    AlgorithmCandidate,
    AlgorithmContext,
    AlgorithmSelector,
    BuildPlan,
    PlannedLayer,
)
from reprobuild.core.errors import EnvironmentMismatchError, ReplayMismatchError, UsageError
from reprobuild.core.logger import Logger
from reprobuild.engine.format import FORMAT_VERSION
from reprobuild.environment.policy import POLICIES, compare_environments, difference_summary, difference_table, remedies
from reprobuild.ir import OptimizationProfile
from reprobuild.manifest import models as m


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k in sorted(value):
            out.update(_flatten(value[k], f"{prefix}.{k}"))
        return out
    return {prefix: value}


def config_differences(recorded: m.BuildConfigRecord, current: m.BuildConfigRecord) -> list[str]:
    a, b = _flatten(recorded.model_dump(mode="json"), "config"), _flatten(current.model_dump(mode="json"), "config")
    return [f"build {k}: manifest {a.get(k)!r}, this build {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]


_ABSENT = object()


def _shown(value: Any) -> str:
    return "(absent)" if value is _ABSENT else repr(value)


def _deep_flatten(value: Any, prefix: str) -> dict[str, Any]:
    """Leaves by path, into lists too (``layers[3].attrs.strides``)."""
    if isinstance(value, dict) and value:
        return {k: v for key in sorted(value) for k, v in _deep_flatten(value[key], f"{prefix}.{key}").items()}
    if isinstance(value, list) and value:
        return {k: v for i, item in enumerate(value) for k, v in _deep_flatten(item, f"{prefix}[{i}]").items()}
    return {prefix: value}


def _tensor_differences(kind: str, recorded: Sequence[Any], current: Sequence[Any]) -> list[str]:
    """Tensors (TensorRecord or their JSON form) compared position by position: name, shape, dtype."""
    rec = [t.model_dump(mode="json") if isinstance(t, m.Strict) else dict(t) for t in recorded]
    cur = [t.model_dump(mode="json") if isinstance(t, m.Strict) else dict(t) for t in current]
    if len(rec) != len(cur):
        return [f"{kind}s recorded {len(rec)} {[t.get('name') for t in rec]}, this build {len(cur)} "
                f"{[t.get('name') for t in cur]}"]
    problems = []
    for i, (a, b) in enumerate(zip(rec, cur)):
        for key in sorted(set(a) | set(b)):
            if a.get(key, _ABSENT) != b.get(key, _ABSENT):
                problems.append(f"{kind} {i} ({b.get('name')!r}) {key} recorded {_shown(a.get(key, _ABSENT))}, "
                                f"this build {_shown(b.get(key, _ABSENT))}")
    return problems


def layer_differences(record: m.LayerRecord, layer: PlannedLayer,
                      candidate: AlgorithmCandidate | None) -> list[str]:
    """How a pinned layer differs from the layer this build plans, field by field (the tactic itself is compared
    by :meth:`ReplaySelector._tactic_problem`; ``candidate`` is this build's candidate for the recorded tactic, or
    None when it has none, whose precision and workspace are then not compared)."""
    current: Mapping[str, Any] = layer.record
    problems: list[str] = []
    if current:
        for key, what in (("name", "name"), ("op", "op"), ("onnx_nodes", "ONNX nodes")):
            if getattr(record, key) != current[key]:
                problems.append(f"{what} recorded {getattr(record, key)!r}, this build {current[key]!r}")
        problems += _tensor_differences("input", record.inputs, current["inputs"])
        problems += _tensor_differences("output", record.outputs, current["outputs"])
        attrs = current["attrs"]
        for key in sorted(set(record.attrs) | set(attrs)):
            a, b = record.attrs.get(key, _ABSENT), attrs.get(key, _ABSENT)
            if a != b:
                problems.append(f"attribute {key} recorded {_shown(a)}, this build {_shown(b)}")
    if candidate is not None:
        if candidate.precision is not None and candidate.precision != record.precision:
            problems.append(f"precision recorded {record.precision}, this build {candidate.precision}")
        if candidate.workspace_bytes != record.workspace_bytes:
            problems.append(f"workspace recorded {record.workspace_bytes} bytes, this build "
                            f"{candidate.workspace_bytes} bytes")
    return problems


def pinned_differences(recorded: m.Pinned, current: m.Pinned, environment_differs: bool) -> list[str]:
    """Where a replay's pinned manifest differs from the recorded one in what it must reproduce: all of it but the
    environment (the policy decides), the prose reason of the execution mode, and, where the environment differs,
    what the environment decides (the golden digests of computed values, kernels' compile options and cubins)."""
    a, b = recorded.model_dump(mode="json"), current.model_dump(mode="json")
    for doc in (a, b):
        doc.pop("environment")
        doc["execution"].pop("reason")
        if environment_differs:
            doc.pop("golden")
            for source in doc["kernel_sources"]:
                source.pop("compile_options")
                source.pop("cubin_sha256")
    fa, fb = _deep_flatten(a, "pinned"), _deep_flatten(b, "pinned")
    paths = [*fa, *(k for k in fb if k not in fa)]  # in document order
    return [f"{k}: recorded {_shown(fa.get(k, _ABSENT))}, this build {_shown(fb.get(k, _ABSENT))}"
            for k in paths if fa.get(k, _ABSENT) != fb.get(k, _ABSENT)]


#: Positions of a reordering listed in full; beyond this many the message counts the rest.
MAX_ORDER_LINES = 20


def order_differences(recorded: Sequence[tuple[str, str]], current: Sequence[tuple[str, str]]) -> list[str]:
    """The positions where two orders of the same layers ((key, name) pairs, the layers both sides have) differ."""
    moved = [(i, a[1], b[1]) for i, (a, b) in enumerate(zip(recorded, current)) if a[0] != b[0]]
    lines = [f"layer order: position {i} recorded {a!r}, this build {b!r}" for i, a, b in moved[:MAX_ORDER_LINES]]
    if len(moved) > MAX_ORDER_LINES:
        lines.append(f"layer order: and {len(moved) - MAX_ORDER_LINES} more position(s) differ")
    return lines


def _model_differences(recorded: m.ModelRecord, current: m.ModelRecord) -> list[str]:
    problems = []
    if recorded.sha256 != current.sha256:
        problems.append(f"model digest: manifest {recorded.sha256}, this model {current.sha256}")
    a, b = recorded.model_dump(), current.model_dump()
    for key in sorted(set(a) - {"sha256", "structural_hash"}):
        if a[key] != b[key]:
            problems.append(f"model {key}: manifest {a[key]!r}, this model {b[key]!r}")
    return problems


def recorded_parameters(recorded: m.AnyTacticRef, tactic: AlgorithmCandidate) -> dict[str, int | str] | None:
    """The parameters a manifest records for ``tactic`` (one that chooses them per layer), when the layer records
    that tactic (family, name and version), else None: what a replay or a refit pins, so that exactly the recorded
    variant runs again, whether or not this machine's ``variants`` lists it."""
    if not isinstance(recorded, m.TacticRef):  # a schema-3 record, refused by name (``_tactic_problem``)
        return None
    if (recorded.family, recorded.name, recorded.version) != (tactic.family, tactic.name, tactic.version):
        return None
    return dict(recorded.parameters)


class ReplaySelector(AlgorithmSelector):
    """Forces the tactics a manifest records. Nothing is timed; any mismatch is an error, never a fallback."""

    requires_timing = False
    untimed_reason = "forced by the replayed manifest"

    def __init__(self, manifest: m.Manifest, env_policy: str = "strict", logger: Logger | None = None) -> None:
        if env_policy not in POLICIES:
            raise UsageError(f"env policy must be one of {', '.join(POLICIES)}; got {env_policy!r}")
        self.manifest = manifest
        self.env_policy = env_policy
        self.logger = logger or Logger()
        self._recorded = {layer.key: layer for layer in manifest.pinned.layers}
        self._honoured: dict[str, bool] = {}
        self._environment_differs = False
        #: After the build: how the engine's digest compares with the one the manifest records.
        self.digest_verdict = ""

    def begin(self, plan: BuildPlan) -> None:
        pinned = self.manifest.pinned
        problems = _model_differences(pinned.model, plan.model)
        if pinned.model.structural_hash != plan.model.structural_hash:
            passes = ", ".join(p.name for p in plan.config.passes)
            problems.append(f"network structure: manifest {pinned.model.structural_hash}, this network "
                            f"{plan.model.structural_hash} (after passes {passes})")
        problems += config_differences(pinned.config, plan.config)
        for kind, recorded, current in (("network input", pinned.inputs, plan.inputs),
                                        ("network output", pinned.outputs, plan.outputs),
                                        ("pinned input", pinned.pinned_inputs, plan.pinned_inputs)):
            if current is not None:
                problems += _tensor_differences(kind, recorded, current)
        problems += self._layer_problems(plan)
        diffs = compare_environments(pinned.environment, plan.environment)
        self._environment_differs = bool(diffs)
        refused = [d for d in diffs if not d.allowed(self.env_policy)]
        table = difference_table(diffs, self.env_policy) if diffs else ""
        if problems:
            lines = "\n".join(f"  - {p}" for p in problems)
            env = f"\n  environment differences:\n{table}" if diffs else ""
            raise ReplayMismatchError(f"cannot replay the manifest: {len(problems)} mismatch(es):\n{lines}{env}")
        if refused:
            fixes = "".join(f"  - {r}\n" for r in remedies(refused, plan.environment))
            raise EnvironmentMismatchError(
                f"the environment differs from the manifest's in {len(refused)} field(s) "
                f"({difference_summary(refused)}), and --env-policy {self.env_policy} refuses that: here the recorded "
                "tactics may compute other bits (another BLAS kernel, CPU, library or setting), so the engine and "
                "its golden outputs could not be compared with the manifest's. This is an environment difference, "
                f"not a fault in the manifest or in reprobuild:\n{table}\n"
                + (f"To compute as the recorded environment did:\n{fixes}" if fixes else "")
                + "Replay on a machine that matches, or choose --env-policy compatible (allows only differences "
                "that cannot change results) or ignore (builds, and records this machine's environment)")
        if diffs:
            verb = "allowed" if self.env_policy == "compatible" else "ignored"
            self.logger.warning(f"replaying with {len(diffs)} environment difference(s) {verb} by --env-policy "
                                f"{self.env_policy}; the new manifest records this machine's values:\n{table}")

    def _layer_problems(self, plan: BuildPlan) -> list[str]:
        """Every layer of the plan against the manifest's: matched by structural key, then compared field by
        field, then the order of those both have."""
        problems: list[str] = []
        pinned = self.manifest.pinned
        seen: set[str] = set()
        for recorded in pinned.layers:
            if recorded.key in seen:
                problems.append(f"manifest layer {recorded.name!r} ({recorded.op}, key {recorded.key[:12]}) is "
                                "recorded more than once")
            seen.add(recorded.key)
        planned = {layer.context.key: layer for layer in plan.layers}
        for layer in plan.layers:
            ctx = layer.context
            record = self._recorded.get(ctx.key)
            if record is None:
                problems.append(f"layer {ctx.name!r} ({ctx.op}, key {ctx.key[:12]}) is not in the manifest")
                continue
            problem = self._tactic_problem(record, layer.eligible, layer.excluded)
            if problem:
                problems.append(f"layer {ctx.name!r} ({ctx.op}): {problem}")
            candidate = next((c for c in layer.eligible if c.matches(record.tactic)), None)
            problems += [f"layer {ctx.name!r} ({ctx.op}): {p}" for p in layer_differences(record, layer, candidate)]
        for record in pinned.layers:
            if record.key not in planned:
                problems.append(f"manifest layer {record.name!r} ({record.op}, key {record.key[:12]}) is not in "
                                "this network")
        recorded_order: dict[str, str] = {}  # a key recorded twice counts once, where it first is
        for record in pinned.layers:
            if record.key in planned:
                recorded_order.setdefault(record.key, record.name)
        current_order = [(layer.context.key, layer.context.name) for layer in plan.layers
                         if layer.context.key in self._recorded]
        problems += order_differences(list(recorded_order.items()), current_order)
        return problems

    @staticmethod
    def _tactic_problem(record: m.LayerRecord, eligible: Sequence[AlgorithmCandidate],
                        excluded: Sequence[tuple[AlgorithmCandidate, str]]) -> str | None:
        want = record.tactic
        if any(c.matches(want) for c in eligible):
            return None
        for c, reason in excluded:
            if c.matches(want):
                return f"recorded tactic {want.label} cannot be used here: {reason}"
        if isinstance(want, m.LegacyTacticRef):
            return (f"recorded tactic {want.label} has only a source_sha256 (schema 3 or older: a digest of source "
                    "text), which cannot be compared with this installation's code_sha256 (a digest of exactly what "
                    "the tactic runs); rebuild without --replay to pin this model again")
        same = [c for c in (*eligible, *(c for c, _ in excluded))
                if (c.family, c.name, c.version) == (want.family, want.name, want.version)]
        if same:
            c = same[0]
            if c.code_sha256 != want.code_sha256:
                return (f"recorded tactic {want.label} has code digest {want.code_sha256[:16]}..., but this "
                        f"installation's is {c.code_sha256[:16]}...: the code it runs changed")
            return f"recorded tactic {want.label} has parameters {want.parameters}, this one {dict(c.parameters)}"
        return f"recorded tactic {want.label} is not available in this installation for this backend"

    def pinned_parameters(self, context: AlgorithmContext,
                          tactic: AlgorithmCandidate) -> Mapping[str, int | str] | None:
        record = self._recorded.get(context.key)
        return recorded_parameters(record.tactic, tactic) if record is not None else None

    def for_profile(self, index: int) -> AlgorithmSelector:
        """Profile 0 is the manifest's own layers (this selector, with every check); another profile's build gets
        exactly the tactics the manifest records for it, layer by layer (``ProfileReplaySelector``)."""
        if index == 0:
            return self
        dynamic = self.manifest.pinned.dynamic
        if dynamic is None or index >= len(dynamic.profiles):
            raise ReplayMismatchError(f"this build has optimization profile {index}, which the manifest does not "
                                      "record; replay with the manifest's profiles")
        return ProfileReplaySelector(index, dynamic.profiles[index].tactics, self.logger)

    def select(self, context: AlgorithmContext,
               candidates: Sequence[AlgorithmCandidate]) -> Sequence[AlgorithmCandidate]:
        want = self._recorded[context.key].tactic
        return [c for c in candidates if c.matches(want)]

    def report(self, context: AlgorithmContext, chosen: AlgorithmCandidate) -> None:
        self._honoured[context.key] = chosen.matches(self._recorded[context.key].tactic)

    def end(self, pinned: m.Pinned, engine_sha256: str) -> None:
        missed = [r.name for r in self.manifest.pinned.layers if not self._honoured.get(r.key, False)]
        if missed:
            raise ReplayMismatchError(f"{len(missed)} of {len(self.manifest.pinned.layers)} recorded decisions were "
                                      f"not honoured: {', '.join(missed)}")
        self.logger.info(f"replay honoured {len(self._honoured)}/{len(self.manifest.pinned.layers)} decisions (100%)")
        differences = pinned_differences(self.manifest.pinned, pinned, self._environment_differs)
        if differences:
            lines = "\n".join(f"  - {d}" for d in differences[:50])
            more = f"\n  - and {len(differences) - 50} more" if len(differences) > 50 else ""
            raise ReplayMismatchError(
                f"cannot replay the manifest: every decision was honoured, but this build's pinned manifest differs "
                f"from the recorded one in {len(differences)} place(s):\n{lines}{more}\nThe manifest was edited "
                "after its build (rebuild without --replay for a manifest of this build), or, if it is untouched, "
                "this machine differs in something the environment fingerprint does not record, or this is a "
                "determinism bug in reprobuild: please report it with the manifest")
        recorded = self.manifest.engine.sha256 if self.manifest.engine is not None else None
        if recorded is None:
            self.digest_verdict = "the manifest records no engine digest to compare with"
        elif self.manifest.engine is not None and self.manifest.engine.format_version != FORMAT_VERSION:
            self.digest_verdict = (f"not comparable: the manifest's engine has format version "
                                   f"{self.manifest.engine.format_version}, this build writes {FORMAT_VERSION}")
        elif engine_sha256 == recorded:
            self.digest_verdict = "identical to the engine digest the manifest records"
        elif pinned == self.manifest.pinned:
            raise ReplayMismatchError(
                f"the replay produced engine {engine_sha256}, but the manifest records {recorded}, although the "
                "model, config, tactics and environment all match: a determinism bug in reprobuild, an environment "
                "input the fingerprint does not record, or a change to the engine writer that bumped neither the "
                "engine format version nor the reprobuild version; please report it with both manifests")
        else:
            self.digest_verdict = ("differs from the manifest's engine digest, as expected: the environment "
                                   f"differs (allowed by --env-policy {self.env_policy})")
        self.logger.info(f"engine digest {engine_sha256[:16]}...: {self.digest_verdict}")


class ProfileReplaySelector(AlgorithmSelector):
    """Forces, layer by layer (in order), the tactics a manifest records for one optimization profile of a
    dynamic engine; anything else fails the replay, naming the layer, the profile and the recorded tactic."""

    requires_timing = False
    untimed_reason = "forced by the replayed manifest's profile"

    def __init__(self, index: int, tactics: Sequence[m.TacticRef], logger: Logger | None = None) -> None:
        self.index, self.tactics, self.logger = index, list(tactics), logger or Logger()
        self._honoured: dict[int, bool] = {}

    def begin(self, plan: BuildPlan) -> None:
        if len(plan.layers) != len(self.tactics):
            raise ReplayMismatchError(f"profile {self.index}: this network has {len(plan.layers)} layers, the "
                                      f"manifest records tactics for {len(self.tactics)}")

    def pinned_parameters(self, context: AlgorithmContext,
                          tactic: AlgorithmCandidate) -> Mapping[str, int | str] | None:
        return recorded_parameters(self.tactics[context.index], tactic) if context.index < len(self.tactics) else None

    def select(self, context: AlgorithmContext,
               candidates: Sequence[AlgorithmCandidate]) -> Sequence[AlgorithmCandidate]:
        want = self.tactics[context.index]
        picked = [c for c in candidates if c.matches(want)]
        if not picked:
            raise ReplayMismatchError(f"profile {self.index}: layer {context.name!r} ({context.op}) records tactic "
                                      f"{want.label}, which cannot run it here at every shape of the profile (or is "
                                      f"not installed); offered: {', '.join(c.label for c in candidates) or 'none'}")
        return picked

    def report(self, context: AlgorithmContext, chosen: AlgorithmCandidate) -> None:
        self._honoured[context.index] = chosen.matches(self.tactics[context.index])

    def end(self, pinned: m.Pinned, engine_sha256: str) -> None:
        missed = [i for i in range(len(self.tactics)) if not self._honoured.get(i, False)]
        if missed:
            raise ReplayMismatchError(f"profile {self.index}: {len(missed)} recorded decisions were not honoured "
                                      f"(layers {missed[:10]})")


def profiles_from_manifest(manifest: m.Manifest) -> list[OptimizationProfile]:
    """The optimization profiles a dynamic engine's manifest records (none for fixed shapes): what a replay
    parses and builds the model with."""
    dynamic = manifest.pinned.dynamic
    if dynamic is None:
        return []
    out = []
    for record in dynamic.profiles:
        profile = OptimizationProfile()
        for name, (low, opt, high) in record.inputs.items():
            profile.set_shape(name, low, opt, high)
        out.append(profile)
    return out

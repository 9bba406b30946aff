"""Manifest replay: force every layer's recorded tactic, time nothing, and fail closed.

Before anything is built, ``ReplaySelector.begin`` compares the manifest with this build (model digest, build
config, layers matched by structural key, each recorded tactic by value, the environment under the chosen
policy) and raises one error that lists **every** mismatch. After the build, ``end`` checks that every recorded
decision was honoured.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reprobuild.builder.selector import AlgorithmCandidate, AlgorithmContext, AlgorithmSelector, BuildPlan
from reprobuild.engine.format import FORMAT_VERSION
from reprobuild.envpolicy import POLICIES, compare_environments, difference_table
from reprobuild.errors import EnvironmentMismatchError, ReplayMismatchError, UsageError
from reprobuild.logger import Logger
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
        #: After the build: how the engine's digest compares with the one the manifest records.
        self.digest_verdict = ""

    def begin(self, plan: BuildPlan) -> None:
        pinned = self.manifest.pinned
        problems: list[str] = []
        if pinned.model.sha256 != plan.model.sha256:
            problems.append(f"model digest: manifest {pinned.model.sha256}, this model {plan.model.sha256}")
        if pinned.model.structural_hash != plan.model.structural_hash:
            passes = ", ".join(p.name for p in plan.config.passes)
            problems.append(f"network structure: manifest {pinned.model.structural_hash}, this network "
                            f"{plan.model.structural_hash} (after passes {passes})")
        problems += config_differences(pinned.config, plan.config)
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
        for record in pinned.layers:
            if record.key not in planned:
                problems.append(f"manifest layer {record.name!r} ({record.op}, key {record.key[:12]}) is not in "
                                "this network")
        diffs = compare_environments(pinned.environment, plan.environment)
        refused = [d for d in diffs if not d.allowed(self.env_policy)]
        table = difference_table(diffs, self.env_policy) if diffs else ""
        if problems:
            lines = "\n".join(f"  - {p}" for p in problems)
            env = f"\n  environment differences:\n{table}" if diffs else ""
            raise ReplayMismatchError(f"cannot replay the manifest: {len(problems)} mismatch(es):\n{lines}{env}")
        if refused:
            raise EnvironmentMismatchError(
                f"the environment differs from the manifest's in {len(refused)} field(s), and --env-policy "
                f"{self.env_policy} refuses that:\n{table}\nReplay on a machine that matches, or choose "
                "--env-policy compatible (allows only differences that cannot change results) or ignore")
        if diffs:
            verb = "allowed" if self.env_policy == "compatible" else "ignored"
            self.logger.warning(f"replaying with {len(diffs)} environment difference(s) {verb} by --env-policy "
                                f"{self.env_policy}; the new manifest records this machine's values:\n{table}")

    @staticmethod
    def _tactic_problem(record: m.LayerRecord, eligible: Sequence[AlgorithmCandidate],
                        excluded: Sequence[tuple[AlgorithmCandidate, str]]) -> str | None:
        want = record.tactic
        if any(c.matches(want) for c in eligible):
            return None
        for c, reason in excluded:
            if c.matches(want):
                return f"recorded tactic {want.label} cannot be used here: {reason}"
        same = [c for c in (*eligible, *(c for c, _ in excluded))
                if (c.family, c.name, c.version) == (want.family, want.name, want.version)]
        if same:
            c = same[0]
            if c.source_sha256 != want.source_sha256:
                return (f"recorded tactic {want.label} has source digest {want.source_sha256[:16]}..., but this "
                        f"installation's is {c.source_sha256[:16]}...: the kernel changed")
            return f"recorded tactic {want.label} has parameters {want.parameters}, this one {dict(c.parameters)}"
        return f"recorded tactic {want.label} is not available in this installation for this backend"

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
                "model, config, tactics and environment all match: a determinism bug in reprobuild, or a change to "
                "the engine writer that bumped neither the engine format version nor the reprobuild version; "
                "please report it with both manifests")
        else:
            self.digest_verdict = ("differs from the manifest's engine digest, as expected: the environment "
                                   f"differs (allowed by --env-policy {self.env_policy})")
        self.logger.info(f"engine digest {engine_sha256[:16]}...: {self.digest_verdict}")

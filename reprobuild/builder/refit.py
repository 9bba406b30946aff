"""The Refitter, after TensorRT's ``IRefitter``: an engine with new weights and the same decisions, timing nothing.

``Refitter(engine)`` names the engine's weights (``get_all_weights``: its constants after the build passes, such
as convolution weights with a BatchNorm folded in), takes new values one by one (``set_named_weights``, checked
against the engine's shape and dtype exactly) and ``refit()`` makes the new engine once every weight is set.
``refit_from_model(path)`` takes them from a new ONNX model of the same graph instead: it goes through the same
frontend and passes the engine's manifest records, and its network must be the engine's but for weight values.

A refit rebuilds the engine with a selector (:class:`RefitSelector`) that forces each layer's recorded tactic and
times nothing; it refuses, with a :class:`~reprobuild.core.errors.RefitError` naming the first layer that differs, a
network that differs in anything but weights (ops, attributes, shapes, dtypes, wiring, layer names) or a tactic
that the new weights make ineligible, and refuses an environment the policy does not allow, as a replay does.
The new pinned manifest then differs from the engine's only in what weight values decide: the model record
(file digest, structural hash), each layer's structural key (it covers its weights' digests) and the golden
output and layer digests. It is checked to, field by field. The engine digest follows. The manifest's evidence
says it is a refit (``selector: RefitSelector``, no tactic timed); given the engine's own manifest, it carries
that build's timing evidence of every candidate over, each chosen reason naming the engine it was chosen for.
The result is the engine ``reprobuild build --replay`` of the new manifest on the new model makes again.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from reprobuild.builder.builder import Builder, BuildResult
from reprobuild.builder.config import BuilderConfig
from reprobuild.builder.replay import (
    ProfileReplaySelector,
    ReplaySelector,
    _deep_flatten,
    _shown,
    _tensor_differences,
    config_differences,
    layer_differences,
    profiles_from_manifest,
    recorded_parameters,
)
from reprobuild.builder.selector import AlgorithmCandidate, AlgorithmContext, AlgorithmSelector, BuildPlan
from reprobuild.core.digest import sha256_hex
from reprobuild.core.dtypes import dtype_name
from reprobuild.core.errors import EnvironmentMismatchError, ModelError, RefitError, UsageError
from reprobuild.core.fileio import atomic_write_all, read_bounded
from reprobuild.core.logger import Logger
from reprobuild.core.symbolic import symbol_ranges
from reprobuild.engine.dynamic import symbolic_attrs, symbolic_shapes
from reprobuild.engine.format import deserialize_engine
from reprobuild.engine.runtime import Engine
from reprobuild.environment.policy import POLICIES, compare_environments, difference_summary, difference_table
from reprobuild.frontend import network_from_onnx_bytes
from reprobuild.frontend.onnx_parser import MAX_MODEL_BYTES
from reprobuild.ir import Layer, Network, TensorInfo, make_attrs
from reprobuild.kernels.tactic import TacticRegistry
from reprobuild.manifest import models as m
from reprobuild.manifest.io import manifest_to_json, pinned_bytes, pinned_from_json
from reprobuild.manifest.pairs import pair_mismatch
from reprobuild.registry import default_registry

__all__ = ["RefitResult", "RefitSelector", "Refitter"]

_REBUILD = ("a refit changes weight values only; rebuild the engine from the new model instead "
            "(reprobuild build NEW.onnx)")
#: Pinned fields a refit may change: what weight values decide (and, where the environment differs and the
#: policy allows it, what the environment decides, as for a replay).
_WEIGHT_DECIDED = (r"pinned\.model\..*", r"pinned\.layers\[\d+\]\.key", r"pinned\.golden\.(outputs|layers)\b.*")
_ENVIRONMENT_DECIDED = (r"pinned\.environment\..*", r"pinned\.execution\.reason",
                        r"pinned\.kernel_sources\[\d+\]\.(compile_options|cubin_sha256)\b.*")


@dataclass(frozen=True)
class RefitResult(BuildResult):
    """The refitted engine's bytes, its manifest, and the network (after passes) it was built from."""

    def save(self, engine_path: str | os.PathLike[str], manifest_path: str | os.PathLike[str] | None = None) -> None:
        """Write the engine, and the manifest if a path is given, atomically and as a pair (manifest last)."""
        items: list[tuple[str | os.PathLike[str], bytes]] = [(engine_path, self.engine)]
        if manifest_path is not None:
            items.append((manifest_path, manifest_to_json(self.manifest)))
        atomic_write_all(items)


def _declared_inputs(model: bytes) -> str:
    """The run-time inputs an ONNX model declares, as 'name [dims] dtype' (a dynamic dimension by its symbol)."""
    graph = onnx.load_model_from_string(model).graph
    constants = {t.name for t in graph.initializer}
    shown = []
    for vi in graph.input:
        if vi.name in constants:
            continue
        tensor = vi.type.tensor_type
        dims = [d.dim_param or "?" if not d.HasField("dim_value") else d.dim_value for d in tensor.shape.dim]
        try:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        except (KeyError, ValueError, TypeError):  # no NumPy dtype (a string, an undefined type)
            dtype = f"(ONNX element type {tensor.elem_type})"
        shown.append(f"{vi.name} {dims if tensor.HasField('shape') else '(no shape)'} {dtype}")
    return ", ".join(shown) or "no inputs"


class RefitSelector(AlgorithmSelector):
    """Forces every layer's tactic from the engine being refitted (matched by position, the network being the
    same but for weights), times nothing, and refuses anything that is not a weight change."""

    requires_timing = False

    def __init__(self, pinned: m.Pinned, engine_sha256: str, env_policy: str = "strict",
                 logger: Logger | None = None) -> None:
        if env_policy not in POLICIES:
            raise UsageError(f"env policy must be one of {', '.join(POLICIES)}; got {env_policy!r}")
        self.pinned, self.engine_sha256, self.env_policy = pinned, engine_sha256, env_policy
        self.logger = logger or Logger()
        self.untimed_reason = (f"kept from engine {engine_sha256[:16]}...: a refit keeps every decision and times "
                               "nothing")
        self._honoured: dict[int, bool] = {}
        self._environment_differs = False

    def for_profile(self, index: int) -> AlgorithmSelector:
        """A dynamic engine's other profiles keep their recorded tactics too, layer by layer."""
        if index == 0:
            return self
        dynamic = self.pinned.dynamic
        if dynamic is None or index >= len(dynamic.profiles):
            raise RefitError(f"the refit builds optimization profile {index}, which the engine does not have")
        return ProfileReplaySelector(index, dynamic.profiles[index].tactics, self.logger)

    def begin(self, plan: BuildPlan) -> None:
        recorded = self.pinned
        problems = config_differences(recorded.config, plan.config)
        for kind, before, now in (("network input", recorded.inputs, plan.inputs),
                                  ("network output", recorded.outputs, plan.outputs),
                                  ("pinned input", recorded.pinned_inputs, plan.pinned_inputs)):
            if now is not None:
                problems += _tensor_differences(kind, before, now)
        if problems:
            raise RefitError(f"the new network does not fit the engine: {'; '.join(problems)}; {_REBUILD}")
        if len(plan.layers) != len(recorded.layers):
            raise RefitError(f"the new network has {len(plan.layers)} layers after the build passes, the engine "
                             f"{len(recorded.layers)}; {_REBUILD}")
        for index, (record, layer) in enumerate(zip(recorded.layers, plan.layers)):
            candidate = next((c for c in layer.eligible if c.matches(record.tactic)), None)
            found = layer_differences(record, layer, candidate)
            tactic = ReplaySelector._tactic_problem(record, layer.eligible, layer.excluded)
            if tactic is not None:
                found.append(f"{tactic} (with the new weights)")
            if found:
                raise RefitError(f"layer {index} {record.name!r} ({record.op}) of the engine differs in the new "
                                 f"network: {'; '.join(found)}; {_REBUILD}")
        diffs = compare_environments(recorded.environment, plan.environment)
        self._environment_differs = bool(diffs)
        refused = [d for d in diffs if not d.allowed(self.env_policy)]
        if refused:
            raise EnvironmentMismatchError(
                f"this machine differs from the one the engine was built on in {len(refused)} field(s) "
                f"({difference_summary(refused)}), and env policy {self.env_policy} refuses that:\n"
                f"{difference_table(diffs, self.env_policy)}\nRefit on a machine that matches, or allow it "
                "(env_policy compatible or ignore, --env-policy); the new manifest then records this machine's "
                "environment")
        if diffs:
            self.logger.warning(f"refitting with {len(diffs)} environment difference(s) allowed by env policy "
                                f"{self.env_policy}:\n{difference_table(diffs, self.env_policy)}")

    def pinned_parameters(self, context: AlgorithmContext,
                          tactic: AlgorithmCandidate) -> Mapping[str, int | str] | None:
        if context.index >= len(self.pinned.layers):  # another network: begin refuses it, naming the difference
            return None
        return recorded_parameters(self.pinned.layers[context.index].tactic, tactic)

    def select(self, context: AlgorithmContext,
               candidates: Sequence[AlgorithmCandidate]) -> Sequence[AlgorithmCandidate]:
        want = self.pinned.layers[context.index].tactic
        return [c for c in candidates if c.matches(want)]

    def report(self, context: AlgorithmContext, chosen: AlgorithmCandidate) -> None:
        self._honoured[context.index] = chosen.matches(self.pinned.layers[context.index].tactic)

    def end(self, pinned: m.Pinned, engine_sha256: str) -> None:
        missed = [r.name for i, r in enumerate(self.pinned.layers) if not self._honoured.get(i, False)]
        if missed:
            raise RefitError(f"the refit did not keep the engine's tactic on layer(s) {', '.join(missed)}")
        allowed = _WEIGHT_DECIDED + (_ENVIRONMENT_DECIDED if self._environment_differs else ())
        before = _deep_flatten(self.pinned.model_dump(mode="json"), "pinned")
        after = _deep_flatten(pinned.model_dump(mode="json"), "pinned")
        paths = [*before, *(k for k in after if k not in before)]
        absent = object()
        changed = [k for k in paths if before.get(k, absent) != after.get(k, absent)
                   and not any(re.fullmatch(p, k) for p in allowed)]
        if changed:
            lines = "\n".join(f"  - {k}: engine {_shown(before.get(k, absent))}, refit {_shown(after.get(k, absent))}"
                              for k in changed[:20])
            raise RefitError(f"the refitted engine's pinned manifest differs from the engine's in more than what "
                             f"weights decide, in {len(changed)} place(s):\n{lines}\nA tactic whose memory or "
                             f"execution depends on weight values cannot be refitted; {_REBUILD}")


class Refitter:
    """New weights for an engine, every decision kept: TensorRT's ``IRefitter`` (see the module docstring).

    ``engine``: the engine's bytes, or an :class:`~reprobuild.engine.runtime.Engine` loaded from bytes.
    ``manifest``: the manifest written with the engine, whose timing evidence the new manifest then carries over
    (None: the new manifest's evidence records the refit alone). ``registry``: the tactics (None: every built-in
    tactic and those of registered plugins). ``env_policy``: as ``build --replay``'s, for a machine that differs
    from the one the engine was built on."""

    def __init__(self, engine: bytes | bytearray | memoryview | Engine, logger: Logger | None = None, *,
                 manifest: m.Manifest | None = None, registry: TacticRegistry | None = None,
                 env_policy: str = "strict") -> None:
        if env_policy not in POLICIES:
            raise UsageError(f"env_policy must be one of {', '.join(POLICIES)}; got {env_policy!r}")
        self.logger = logger or Logger()
        self.registry = registry or default_registry()  # every built-in tactic and those of registered plugins
        self.env_policy = env_policy
        self._bytes = engine.serialize() if isinstance(engine, Engine) else bytes(engine)
        self.engine_sha256 = sha256_hex(self._bytes)
        self._header, self._weights = deserialize_engine(self._bytes, self.registry)
        self.pinned = pinned_from_json(self._header.manifest, "the engine's embedded manifest")
        self.manifest = manifest
        if manifest is not None:
            self._check_pair(manifest)
        pinned_inputs = {p.name for p in self._header.pinned_inputs}
        #: The weights a refit replaces, by name: every constant of the engine but the pinned input values.
        self._expected = {w.name: (tuple(w.shape), w.dtype) for w in self._header.weights
                          if w.name not in pinned_inputs}
        self._new: dict[str, np.ndarray] = {}

    def _check_pair(self, manifest: m.Manifest) -> None:
        recorded = manifest.engine.sha256 if manifest.engine is not None else None
        mismatch = pair_mismatch(recorded, self.engine_sha256, "the engine") if recorded is not None else None
        if mismatch is None and pinned_bytes(manifest.pinned) != self._header.manifest:
            mismatch = "its pinned part is not the one embedded in the engine"
        if mismatch is not None:
            raise UsageError(f"the manifest given to the Refitter is not the engine's: {mismatch}")

    # --- TensorRT's IRefitter ---------------------------------------------------------------------------------

    def get_all_weights(self) -> list[str]:
        """The names of the weights a refit replaces (the engine's constants after the build passes), sorted."""
        return sorted(self._expected)

    def get_missing_weights(self) -> list[str]:
        """The weights not set yet, sorted: a refit replaces every one, so ``refit()`` needs this to be empty."""
        return sorted(set(self._expected) - set(self._new))

    def get_named_weights(self, name: str) -> np.ndarray:
        """A weight's value: the one set for the refit, else the engine's (read-only)."""
        self._check_name(name)
        return self._new.get(name, self._weights[name])

    def set_named_weights(self, name: str, weights: Any) -> None:
        """Set a weight's new value: an array of exactly the engine's shape and dtype for it (a copy is kept)."""
        self._check_name(name)
        shape, dtype = self._expected[name]
        array = np.asarray(weights)
        try:
            found_dtype = dtype_name(array.dtype)
        except ModelError:
            found_dtype = str(array.dtype)
        if tuple(array.shape) != shape or found_dtype != dtype:
            fix = [f"cast it with .astype({dtype!r})"] if found_dtype != dtype else []
            if tuple(array.shape) != shape:
                fix.append("give the values in the engine's layout (the weight after the build passes)")
            raise RefitError(f"weight {name!r}: expected shape {list(shape)} {dtype}, found shape "
                             f"{list(array.shape)} {found_dtype}; {' and '.join(fix)}. A weight of another shape or "
                             f"dtype needs a rebuild, not a refit")
        frozen = np.array(array, copy=True, order="C")
        frozen.setflags(write=False)
        self._new[name] = frozen

    def refit(self) -> RefitResult:
        """The engine with the weights set: every one must be (see ``get_missing_weights``)."""
        missing = self.get_missing_weights()
        if missing:
            shown = ", ".join(repr(n) for n in missing[:10]) + (f" and {len(missing) - 10} more"
                                                               if len(missing) > 10 else "")
            raise RefitError(f"{len(missing)} of the engine's {len(self._expected)} weights are not set: {shown}. A "
                             "refit replaces every weight: set each with set_named_weights (get_named_weights "
                             "gives the engine's value of one to keep), or take them all from a model with "
                             "refit_from_model")
        weights = {**{p.name: self._weights[p.name] for p in self._header.pinned_inputs}, **self._new}
        return self._build(self._network(weights), passes_done=True)

    def refit_from_model(self, model: str | os.PathLike[str] | bytes) -> RefitResult:
        """The engine with the weights of ``model`` (a path or ONNX bytes): the same graph with other initializers,
        imported with the engine's input shapes and pinned input values and run through its build passes."""
        if self._new:
            raise UsageError(f"refit_from_model takes every weight from the model, but {len(self._new)} weight(s) "
                             "were set with set_named_weights; use a new Refitter, or refit() with the weights set")
        profiles = profiles_from_manifest(m.Manifest(pinned=self.pinned))
        shapes = {t.name: t.shape for t in self.pinned.inputs if not profiles or t.name not in
                  self.pinned.dynamic.profiles[0].inputs}  # type: ignore[union-attr]
        values = {p.name: self._weights[p.name] for p in self._header.pinned_inputs}
        data = model if isinstance(model, bytes) else read_bounded(model, MAX_MODEL_BYTES, "model", ModelError)
        try:
            network, _ = network_from_onnx_bytes(data, self.logger, shapes, values, profiles=profiles)
        except UsageError:  # the engine's input shapes or pinned values do not fit the model's inputs
            # The parser's message speaks of --input-shape and --input-value, options a refit's user never gave:
            # say what differs in the refit's own terms instead.
            inputs = ", ".join([*(f"{t.name} {list(t.shape)} {t.dtype}" for t in self.pinned.inputs),
                                *(f"{p.name} (a pinned value)" for p in self._header.pinned_inputs)])
            raise RefitError(f"the new model does not take the engine's inputs (the engine takes {inputs}; the model "
                             f"declares {_declared_inputs(data)}): {_REBUILD}") from None
        return self._build(network, passes_done=False)

    # --- the rebuild ---------------------------------------------------------------------------------------------

    def _network(self, weights: Mapping[str, np.ndarray]) -> Network:
        """The engine's network (after passes) with ``weights`` as its constants; no model file behind it. A dynamic
        engine's is the symbolic network its dynamic section describes."""
        header = self._header
        shapes = symbolic_shapes(header) if header.dynamic else {}
        attrs = symbolic_attrs(header) if header.dynamic else {}
        tensors = {t.name: TensorInfo(t.name, tuple(shapes.get(t.name, t.shape)), t.dtype)
                   for t in (*header.activations, *header.weights)}
        layers = [Layer(layer.name, layer.op, tuple(layer.inputs), tuple(layer.outputs),
                        make_attrs({**layer.attrs, **attrs.get(layer.name, {})}), tuple(record.onnx_nodes))
                  for layer, record in zip(header.layers, self.pinned.layers)]
        ranges = {k: (lo, hi) for k, (lo, hi) in header.dynamic[0].symbols.items()} if header.dynamic else {}
        source = {**self.pinned.model.model_dump(exclude={"structural_hash"}), "sha256": None, "size_bytes": None,
                  "declared_inputs": {k: tuple(v) for k, v in header.declared_inputs.items()},
                  "symbol_ranges": ranges}
        with symbol_ranges(ranges):
            return Network.create(header.name, [tensors[t.name] for t in header.inputs],
                                  [t.name for t in header.outputs], layers, tensors, weights, source,
                                  [p.name for p in header.pinned_inputs])

    def _build(self, network: Network, passes_done: bool) -> RefitResult:
        config = BuilderConfig.from_record(self.pinned.config)
        for profile in profiles_from_manifest(m.Manifest(pinned=self.pinned)):
            config.add_optimization_profile(profile)
        config.algorithm_selector = RefitSelector(self.pinned, self.engine_sha256, self.env_policy, self.logger)
        built: BuildResult = Builder(self.logger, registry=self.registry)._build(network, config, passes_done)
        manifest = built.manifest
        if self.manifest is not None and self.manifest.evidence is not None and manifest.evidence is not None:
            manifest = manifest.model_copy(update={"evidence": self._carried_evidence(manifest)})
        self.logger.info(f"refitted engine {self.engine_sha256[:16]}... into {built.engine_sha256[:16]}...: "
                         f"{len(self._expected)} weights, every tactic kept, nothing timed")
        return RefitResult(engine=built.engine, manifest=manifest, network=built.network)

    def _carried_evidence(self, built: m.Manifest) -> m.Evidence:
        """The refit's evidence with the engine's build's timing evidence of every candidate in place of its own
        (layers keyed by their new structural keys), each chosen reason naming the engine it was chosen for."""
        assert self.manifest is not None and self.manifest.evidence is not None and built.evidence is not None
        keys = {old.key: new.key for old, new in zip(self.pinned.layers, built.pinned.layers)}
        note = f" (chosen in the build of engine {self.engine_sha256[:16]}..., kept by a refit)"
        layers = [m.LayerEvidence(name=e.name, key=keys.get(e.key, e.key), candidates=[
            c.model_copy(update={"reason": c.reason + note}) if c.status == "chosen" else c for c in e.candidates])
            for e in self.manifest.evidence.layers]
        return built.evidence.model_copy(update={"layers": layers, "timing_clock": self.manifest.evidence.timing_clock})

    def _check_name(self, name: str) -> None:
        if name in self._expected:
            return
        if any(p.name == name for p in self._header.pinned_inputs):
            raise RefitError(f"{name!r} is a pinned input value of the engine (it decides shapes), not a weight; "
                             "a new value needs a rebuild with --input-value")
        known = self.get_all_weights()
        shown = ", ".join(repr(n) for n in known[:20]) + (f" and {len(known) - 20} more" if len(known) > 20 else "")
        raise RefitError(f"the engine has no weight {name!r}; its weights (after the build passes, so a folded "
                         f"BatchNorm is in its convolution's weight) are: {shown or 'none'}")

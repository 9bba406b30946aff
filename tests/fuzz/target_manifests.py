"""The manifest target: manifests edited the way a person (or an attacker) would edit one, so that most stay
schema-plausible and load, then replayed against their model (``build --replay``), compared with their engine
(``verify --against``) and diffed with it (``diff``). Some get generic structural or bytes damage instead.

Two oracles: a manifest whose pinned part differs from the engine's must not pass ``verify --against`` without a
reported difference, and ``diff`` of the engine and that manifest must not say they are identical.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

from reprobuild.builder import Builder, BuilderConfig
from reprobuild.builder.replay import ReplaySelector
from reprobuild.core.errors import ReprobuildError
from reprobuild.diffing import diff
from reprobuild.engine.runtime import Engine
from reprobuild.frontend import network_from_onnx_bytes
from reprobuild.manifest import manifest_from_json
from reprobuild.manifest.io import pinned_bytes, pinned_from_json
from reprobuild.registry import default_registry
from reprobuild.verify.run import check_against
from tests.fuzz.case import Case, Target
from tests.fuzz.exercise import CLI_CAP, ENGINE_CAP, QUIET, Context, cli
from tests.fuzz.forge import SWAPS, attr_value
from tests.fuzz.mutate import NASTY_INTS, mutate_bytes, mutate_document, pick
from tests.fuzz.outcome import Silent
from tests.fuzz.seeds import Seed

_HEX = "0123456789abcdef"


def _digest(rng: random.Random) -> str:
    return "".join(rng.choice(_HEX) for _ in range(64))


def _tensor_edit(rng: random.Random, t: dict[str, Any]) -> str:
    how = rng.randrange(3)
    if how == 0 and t["shape"]:
        axis = rng.randrange(len(t["shape"]))
        t["shape"][axis] = pick(rng, (0, 1, t["shape"][axis] + 1, 2**40, -1))
    elif how == 1:
        t["dtype"] = pick(rng, ("float16", "int64", "bfloat16", "bool", "float", "complex64"))
    else:
        t["name"] = pick(rng, ("x", "", "\x1b[31m", t["name"] + "_"))
    return f"tensor {t['name']!r}: {t['shape']} {t['dtype']}"


def _layer_edit(rng: random.Random, doc: dict[str, Any]) -> str:
    layers = doc["pinned"]["layers"]
    if not layers:
        return "no layer to edit"
    layer = pick(rng, layers)
    field = pick(rng, ("attrs", "attrs", "attrs", "inputs", "outputs", "op", "tactic", "tactic", "workspace_bytes",
                       "onnx_nodes", "precision", "key", "name"))
    where = f"layer {layer['name']!r}"
    if field == "attrs":
        attrs = layer["attrs"]
        if attrs and rng.random() < 0.3:
            key = pick(rng, sorted(attrs))
            del attrs[key]
            return f"{where}: attribute {key} deleted"
        key = pick(rng, sorted(attrs)) if attrs else "axis"
        attrs[key] = attr_value(rng, attrs.get(key, 0), 4)
        if isinstance(attrs[key], float):
            attrs[key] = repr(attrs[key])  # the manifest writes floats as strings
        return f"{where}: {key} = {attrs[key]!r}"
    if field in ("inputs", "outputs"):
        if not layer[field]:
            return f"{where}: no {field}"
        return f"{where}: " + _tensor_edit(rng, pick(rng, layer[field]))
    if field == "op":
        layer["op"] = pick(rng, next((fam for fam in SWAPS if layer["op"] in fam), SWAPS[0]))
        return f"{where}: op {layer['op']}"
    if field == "tactic":
        how = rng.randrange(4)
        if how == 0:
            candidates = default_registry().candidates(layer["op"], pick(rng, ("cpu", "cuda")))
            if candidates:
                layer["tactic"] = dict(pick(rng, candidates).ref)
        elif how == 1:
            layer["tactic"]["source_sha256"] = _digest(rng)
        elif how == 2:
            layer["tactic"]["version"] = pick(rng, (2, 0, 2**31))
        else:
            layer["tactic"]["name"] = pick(rng, ("cpu_numpy", "cuda_fast", ""))
        return f"{where}: tactic {layer['tactic']}"
    if field == "workspace_bytes":
        layer[field] = pick(rng, (0, 256, 2**33, 2**62))
    elif field == "onnx_nodes":
        layer[field] = pick(rng, ([], ["x"], layer[field] * 2))
    elif field == "precision":
        layer[field] = pick(rng, ("fp16", "tf32", "bf16", "int8", ""))
    elif field == "key":
        layer[field] = pick(rng, (_digest(rng), pick(rng, layers)["key"]))
    else:
        layer[field] = pick(rng, (pick(rng, layers)["name"], "", "\x1b[2J", layer[field] + "_"))
    return f"{where}: {field} = {str(layer[field])[:40]}"


def _layers_edit(rng: random.Random, doc: dict[str, Any]) -> str:
    layers = doc["pinned"]["layers"]
    how = rng.randrange(4)
    if how == 0 and len(layers) > 1:
        i, j = rng.sample(range(len(layers)), 2)
        layers[i], layers[j] = layers[j], layers[i]
        return f"layers {i} and {j} swapped"
    if how == 1 and layers:
        layers.insert(rng.randrange(len(layers) + 1), copy.deepcopy(pick(rng, layers)))
        return "a layer duplicated"
    if how == 2 and layers:
        del layers[rng.randrange(len(layers))]
        return "a layer deleted"
    del layers[rng.randrange(len(layers) + 1):]
    return f"layers truncated to {len(layers)}"


def _config_edit(rng: random.Random, doc: dict[str, Any]) -> str:
    config = doc["pinned"]["config"]
    field = pick(rng, ("precision", "passes", "timing", "seed", "tie_band", "determinism", "tactic_sources",
                       "max_workspace_bytes", "backend", "cuda_graph"))
    if field == "passes":
        passes = config["passes"]
        how = rng.randrange(4)
        if how == 0 and passes:
            del passes[rng.randrange(len(passes))]
        elif how == 1 and len(passes) > 1:
            passes.reverse()
        elif how == 2:
            passes.append({"name": pick(rng, ("fold_constants", "precision_fp16", "nonsense")), "version": 1})
        elif passes:
            pick(rng, passes)["version"] = pick(rng, (2, 99, 2**31))
    elif field == "timing":
        config["timing"][pick(rng, ("warmup", "iterations", "runs_per_sample"))] = pick(rng, (0, 1, 1000, 2**31))
    else:
        config[field] = pick(rng, {
            "precision": ("fp16", "tf32", "bf16", "fp32"), "seed": (1, 2**64 - 1, 0), "tie_band": (0.0, 1.0, 0.5),
            "determinism": ("any", "run_to_run"), "tactic_sources": ([], ["numpy"], ["cublas"], None),
            "max_workspace_bytes": (0, 2**62, 1), "backend": ("cuda", "cpu"), "cuda_graph": (False, True)}[field])
    return f"config.{field} = {config[field]}"


def _record_edit(rng: random.Random, doc: dict[str, Any]) -> str:
    """An edit to another part of the pinned record, or to the evidence, the engine record or the version."""
    pinned = doc["pinned"]
    part = pick(rng, ("environment", "environment", "memory", "memory", "golden", "golden", "model", "bindings",
                      "evidence", "engine", "schema_version", "kernel_sources", "pinned_inputs", "execution"))
    if part == "environment":
        env = pinned["environment"]
        key = pick(rng, [*sorted(env), "env.OPENBLAS_CORETYPE"])
        env[key] = pick(rng, ("", "Haswell", "1", env.get(key, "x") + "x"))
    elif part == "memory":
        key = pick(rng, sorted(pinned["memory"]))
        pinned["memory"][key] = max(pinned["memory"][key] + pick(rng, (-256, 256, 2**40)), 0)
    elif part == "golden":
        golden = pinned["golden"]
        entries = [*golden["inputs"], *golden["outputs"], *golden["layers"]]
        if rng.random() < 0.2 or not entries:
            golden["seed"] = pick(rng, (1, 2**64 - 1))
        elif rng.random() < 0.8:
            pick(rng, entries)["sha256"] = _digest(rng)
        else:
            del golden["layers"][rng.randrange(len(golden["layers"])):]
    elif part == "model":
        key = pick(rng, ("sha256", "structural_hash", "opset", "ir_version", "producer"))
        pinned["model"][key] = _digest(rng) if "sha" in key or "hash" in key else pick(rng, NASTY_INTS[:8])
    elif part == "bindings":
        return "binding " + _tensor_edit(rng, pick(rng, [*pinned["inputs"], *pinned["outputs"]]))
    elif part == "evidence" and doc.get("evidence"):
        layer = pick(rng, doc["evidence"]["layers"])
        candidate = pick(rng, layer["candidates"])
        candidate[pick(rng, ("status", "samples_ns", "median_ns"))] = pick(rng, ("lost", [1, 2, 3], 5, None))
    elif part == "engine" and doc.get("engine"):
        doc["engine"]["sha256"] = _digest(rng)
    elif part == "schema_version":
        doc["schema_version"] = pick(rng, (1, 2, 4, 0))
    elif part == "kernel_sources":
        pinned["kernel_sources"].append({"file": "conv.cu", "sha256": _digest(rng), "compile_options": ["-O3"]})
    elif part == "pinned_inputs":
        t = pinned["inputs"][0] if pinned["inputs"] else {"name": "x", "shape": [1], "dtype": "int64"}
        pinned["pinned_inputs"].append({**copy.deepcopy(t), "sha256": _digest(rng)})
    elif part == "execution":
        pinned["execution"]["cuda_graph"] = True
    return f"{part} edited"


EDITS = (_layer_edit, _layer_edit, _layer_edit, _layers_edit, _config_edit, _record_edit, _record_edit)


def mutated_manifest(rng: random.Random, seed: Seed) -> tuple[bytes, list[str]]:
    """The seed's manifest with plausible edits (mostly), structural damage or bytes damage."""
    doc = json.loads(seed.manifest)
    mode = rng.random()
    if mode < 0.12:
        return mutate_bytes(rng, seed.manifest), ["bytes damaged"]
    if mode < 0.3:
        doc = mutate_document(rng, doc)
        notes = ["structural mutation"]
    else:
        notes = [pick(rng, EDITS)(rng, doc) for _ in range(rng.randint(1, 3))]
    return json.dumps(doc, sort_keys=True, indent=pick(rng, (None, 2)), default=lambda b: b.hex()).encode(), notes


def edits_pinned(data: bytes, engine: Engine) -> bool:
    """Whether a manifest loads and records another pinned part than the engine embeds."""
    try:
        loaded = manifest_from_json(data, "fuzzed manifest")
    except ReprobuildError:
        return False
    return pinned_bytes(loaded.pinned) != pinned_bytes(pinned_from_json(engine.manifest_json))


def use_manifest(rng: random.Random, data: bytes, seed: Seed, ctx: Context) -> None:
    """Replay it, check the seed's engine against it, or diff the two (API or command line)."""
    if rng.random() < ctx.cli_share:
        return manifest_cli(rng, data, seed, ctx)
    loaded = manifest_from_json(data, "fuzzed manifest")
    use = rng.random()
    if use < 0.55:
        network, _ = network_from_onnx_bytes(seed.model, QUIET)
        config = BuilderConfig.from_record(loaded.pinned.config)
        config.algorithm_selector = ReplaySelector(loaded, pick(rng, ("strict", "compatible", "ignore")), QUIET)
        config.max_memory = ENGINE_CAP
        Builder(QUIET).build(network, config)
        return
    engine = ctx.engine(seed)
    edited = pinned_bytes(loaded.pinned) != pinned_bytes(pinned_from_json(engine.manifest_json))
    if use < 0.85:
        result, _ = check_against(engine, loaded.pinned)
        reported = not result.matched or any(value for key, value in result.model_dump().items()
                                             if isinstance(value, (list, dict)) and key != "outputs")
        if edited and not reported:
            raise Silent("verify --against accepts a manifest whose pinned part differs from the engine's")
        return
    if edited and diff(seed.engine, loaded).identical:
        raise Silent("diff calls an engine and a manifest with another pinned part identical")


def manifest_cli(rng: random.Random, data: bytes, seed: Seed, ctx: Context) -> None:
    path = ctx.case_file("fuzzed.manifest.json", data)
    use = rng.randrange(3)
    if use == 0:
        out = ctx.case_file("out.engine", b"")
        cli(["build", ctx.seed_file(seed, "model"), "--replay", path, "-o", out, "--max-memory", CLI_CAP,
             "--env-policy", pick(rng, ("strict", "compatible", "ignore"))])
    elif use == 1:
        cli(["verify", ctx.seed_file(seed, "engine"), "--against", path, "--runs", "1", "--contexts", "0",
             "--processes", "1", "--traced-runs", "0", "--no-batch-invariance", "--max-memory", CLI_CAP])
    elif cli(["diff", ctx.seed_file(seed, "engine"), path]) == 0 and edits_pinned(data, ctx.engine(seed)):
        raise Silent("reprobuild diff exits 0 (identical) for an engine and a manifest with another pinned part")


def manifest(rng: random.Random, ctx: Context) -> Case:
    seed = pick(rng, ctx.seeds)
    data, notes = mutated_manifest(rng, seed)
    return Case(lambda: use_manifest(rng, data, seed, ctx), data, ".manifest.json", [f"{seed.name}:", *notes])


TARGETS = (
    Target("manifest", "manifest", manifest, 0.25, 300,
           "manifests edited plausibly (layer attributes, tensors, ops, tactics, workspaces, layer order, config, "
           "environment, memory figures, golden digests, model record, evidence, schema version) or damaged "
           "structurally or bytewise; each replayed against its model (build --replay), checked against its "
           "engine (verify --against) or diffed with it, with oracles for edits those let pass"),
)

"""``reprobuild inspect``: what an engine holds: bindings, layers and tactics, memory, digests, environment."""

from __future__ import annotations

import argparse

from reprobuild.cli.common import human_bytes, print_json, read_engine_file
from reprobuild.cli.parsing import Subcommands
from reprobuild.core.digest import TENSOR_DIGEST_LABEL, sha256_hex
from reprobuild.core.errors import ReprobuildError
from reprobuild.core.textformat import printable, table
from reprobuild.engine.format import FORMAT_VERSION, deserialize_engine
from reprobuild.engine.memory import MemoryTotals
from reprobuild.kernels.identity import variant_label
from reprobuild.kernels.tactic import TacticRegistry
from reprobuild.manifest import models as m
from reprobuild.manifest.io import pinned_from_json
from reprobuild.registry.lazy import runtime_registry


def add_parser(sub: Subcommands) -> None:
    p = sub.add_parser(
        "inspect", help="show an engine's bindings, layers, tactics, memory and digests",
        description="Print what an engine file holds, read from its header and embedded manifest; nothing runs "
                    "and no GPU is needed.",
    )
    p.add_argument("engine", help="the engine file")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document instead: the engine file (path, sha256, size, format version) "
                        "and its embedded pinned manifest, which holds everything the text shows")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    data = read_engine_file(args.engine)
    registry = runtime_registry()
    header, _ = deserialize_engine(data, registry)
    pinned = pinned_from_json(header.manifest)
    if args.json:
        print_json({"engine": {"path": args.engine, "sha256": sha256_hex(data), "size_bytes": len(data),
                               "format_version": FORMAT_VERSION},
                    "pinned": pinned.model_dump(mode="json")})
        return 0
    mem = pinned.memory
    print(f"engine      {printable(args.engine)}")
    print(f"sha256      {sha256_hex(data)}")
    print(f"size        {len(data)} bytes, format version {FORMAT_VERSION}")
    print(f"backend     {pinned.config.backend}")
    print(f"model       sha256 {pinned.model.sha256 or '-'}  structure {pinned.model.structural_hash[:16]}  "
          f"opset {pinned.model.opset or '-'}")
    print(f"timing      warmup {pinned.config.timing.warmup}, iterations {pinned.config.timing.iterations} of "
          f"{pinned.config.timing.runs_per_sample} run(s), tie band {pinned.config.tie_band:.1%}, "
          f"seed {pinned.config.seed}, determinism {pinned.config.determinism}")
    print(f"memory      weights {human_bytes(mem.weights_bytes)} (persistent); per context "
          f"{human_bytes(mem.context_bytes)} = activations {human_bytes(mem.activation_bytes)} "
          f"(unshared {human_bytes(mem.unshared_activation_bytes)}) + workspace {human_bytes(mem.workspace_bytes)}")
    totals = MemoryTotals.of(pinned.config.backend, len(data), mem.weights_bytes, mem.context_bytes)
    print("            " + "; ".join(totals.lines()))
    print(f"golden      seed {pinned.golden.seed}, {TENSOR_DIGEST_LABEL}: "
          + ", ".join(f"{printable(d.name)} {d.sha256[:16]}" for d in pinned.golden.outputs)
          + f" ({len(pinned.golden.layers)} layer digests; reprobuild verify --against checks them)")
    print()
    dynamic = pinned.dynamic

    def shape(name: str, fixed: list[int]) -> str:
        dims = dynamic.shapes.get(name, fixed) if dynamic is not None else fixed
        return " x ".join(map(str, dims)) if any(isinstance(d, str) for d in dims) else "x".join(map(str, dims))

    bindings = [["input", t.name, shape(t.name, t.shape), t.dtype] for t in pinned.inputs]
    bindings += [["input (pinned)", t.name, "x".join(map(str, t.shape)), t.dtype] for t in pinned.pinned_inputs]
    bindings += [["output", t.name, shape(t.name, t.shape), t.dtype] for t in pinned.outputs]
    print(table(bindings, ["binding", "name", "shape", "dtype"]))
    print()
    others: list[list[str]] = [[] for _ in pinned.layers]
    if dynamic is not None:
        print("dynamic     " + ", ".join(f"{k} in [{lo}, {hi}]" for k, (lo, hi) in dynamic.symbols.items())
              + f"; {len(dynamic.profiles)} optimization profile(s); the layers below are profile 0's at its opt "
              "shapes")
        print(table([[str(i), name, *("x".join(map(str, s)) for s in triple)]
                     for i, p in enumerate(dynamic.profiles) for name, triple in p.inputs.items()],
                    ["profile", "input", "min", "opt", "max"]))
        print()
        for index, profile in enumerate(dynamic.profiles[1:], start=1):
            for i, tactic in enumerate(profile.tactics):
                if tactic != pinned.layers[i].tactic:
                    others[i].append(f"{index}: {tactic.label}")
    rows = [[str(i), layer.name, layer.op, _tactic(registry, layer), layer.tactic.digest[:12],
             "x".join(map(str, layer.outputs[0].shape)) if layer.outputs else "", str(layer.workspace_bytes)]
            + ([", ".join(others[i]) or "same"] if dynamic is not None and len(dynamic.profiles) > 1 else [])
            for i, layer in enumerate(pinned.layers)]
    print(table(rows, ["#", "layer", "op", "tactic", "code", "output", "workspace"]
                + (["other profiles"] if dynamic is not None and len(dynamic.profiles) > 1 else [])))
    print()
    print(table([[k.label, k.digest[:16], k.cubin_sha256[:16] if k.cubin_sha256 else "-", " ".join(k.compile_options)]
                 for k in pinned.kernel_sources], ["kernel source", "sha256", "cubin", "compile options"]))
    print()
    print(table([[k, v] for k, v in pinned.environment.items()], ["environment", "value"]))
    return 0


def _tactic(registry: TacticRegistry, layer: m.LayerRecord) -> str:
    """The layer's tactic, with the values its variant is bound to where the tactic chooses them per layer (a
    vendor library's algorithm): the label alone would not tell two such layers' algorithms apart."""
    ref = layer.tactic
    try:
        per_layer = registry.get(layer.op, ref.name, ref.version).per_layer_parameters
    except ReprobuildError:  # a tactic this installation lacks (inspect shows such an engine without running it)
        per_layer = False
    return variant_label(ref.label, ref.parameters) if per_layer else ref.label

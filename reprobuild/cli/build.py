"""``reprobuild build``: ONNX model -> timed (or replayed) build -> engine file + manifest."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from reprobuild.builder import (
    Builder,
    BuilderConfig,
    ForcingSelector,
    ProgressMonitor,
    ReplaySelector,
    TimingCache,
)
from reprobuild.builder.config import DEFAULT_TIE_BAND, PRECISIONS, TACTIC_SOURCES
from reprobuild.builder.replay import profiles_from_manifest
from reprobuild.cli.common import (
    PROFILE_SET,
    add_max_memory_option,
    default_engine_path,
    default_manifest_path,
    parse_bytes,
    parse_count,
    parse_fraction,
    parse_pair,
    parse_profile_option,
    parse_seed,
    parse_shape_option,
    parse_value_option,
    print_json,
    profiles_from_options,
    read_engine_or_manifest,
    stderr_is_tty,
)
from reprobuild.cli.devices import (
    build_on_devices,
    check_devices_options,
    device_path,
    parse_devices,
    report,
)
from reprobuild.cli.parsing import Subcommands
from reprobuild.core.digest import sha256_hex
from reprobuild.core.errors import UsageError
from reprobuild.core.fileio import atomic_write_all, check_output_path
from reprobuild.core.logger import Logger, Severity
from reprobuild.environment.policy import POLICIES
from reprobuild.frontend import network_from_onnx_path
from reprobuild.kernels.backend import cuda_unavailable_reason, resolve_devices
from reprobuild.manifest import Manifest, manifest_to_json


def add_parser(sub: Subcommands) -> None:
    p = sub.add_parser(
        "build", help="build an engine from an ONNX model, timing tactics per layer (or replaying a manifest)",
        description="Import an ONNX model, time every eligible tactic of every layer on seeded random inputs, "
                    "keep the fastest, and write the engine and a manifest that records every decision. With "
                    "--replay, force the decisions a manifest (or an engine file's embedded manifest) records "
                    "instead: nothing is timed, and any mismatch with the model, config, installed tactics or "
                    "environment is an error.",
    )
    p.add_argument("model", help="the ONNX model file")
    p.add_argument("-o", "--output", metavar="ENGINE",
                   help="engine file to write (default: the model's name with .engine, in the current directory); "
                        "its directory must exist; the model's own path, a .onnx name, a symbolic link, a special "
                        "file (/dev/null, a FIFO) and - are refused")
    p.add_argument("--manifest", metavar="FILE",
                   help="manifest to write (default: the engine path with .manifest.json instead of .engine); the "
                        "engine's or the model's path is refused, and what --output refuses")
    p.add_argument("--replay", metavar="MANIFEST",
                   help="force the tactics this manifest (or this engine file's embedded manifest) records; build "
                        "options left out are taken from it, and options given must equal it")
    p.add_argument("--env-policy", choices=POLICIES, default="strict",
                   help="with --replay: how to treat environment differences from the manifest. strict refuses "
                        "any; compatible allows only those that cannot change results; ignore warns "
                        "(default: strict)")
    p.add_argument("--timing-cache", metavar="FILE",
                   help="reuse tactic timings stored in FILE and add the new ones (created if missing)")
    p.add_argument("--backend", choices=("auto", "cpu", "cuda"),
                   help="where to build and run (default: auto, cuda when a device is usable)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--device", type=int, metavar="N",
                       help="the GPU to build on (default: 0); not recorded: GPUs of one model give the same "
                            "engine. The cpu backend has one device, 0: any other is refused (exit code 2)")
    where.add_argument("--devices", type=parse_devices, metavar="all|0,1,...",
                       help="build on each GPU listed, in parallel (one process per GPU, each holding only its own "
                            "device's timing lock), writing ENGINE.devN.engine and its manifest per device, then "
                            "say whether the devices chose the same tactics")
    p.add_argument("--input-shape", action="append", type=parse_shape_option, default=[], metavar="NAME=DxD...",
                   help="fix the shape of a network input with dynamic dimensions, e.g. data=1x3x224x224")
    p.add_argument("--profile", dest="profiles", action="append", type=parse_profile_option, default=[],
                   metavar="NAME=MIN:OPT:MAX",
                   help="an optimization profile for a model with dynamic dimensions, one input at a time, e.g. "
                        "--profile input_ids=1x16:8x128:32x512 --profile attention_mask=1x16:8x128:32x512: the "
                        "engine runs every shape from MIN to MAX, axis by axis, with tactics timed at OPT and "
                        "checked at MIN and MAX; every input with a dynamic dimension needs one. Repeat after "
                        "--profile-set for another profile (a context selects one). Dynamic dimensions the model "
                        "names alike (batch) must be given alike")
    p.add_argument("--profile-set", dest="profiles", action="append_const", const=PROFILE_SET,
                   help="start the next optimization profile: the --profile options after it belong to it")
    p.add_argument("--profile-timing", type=parse_profile_timing, metavar="opt[,min][,max]",
                   help="the shapes of each profile the candidate tactics are timed at, their medians summed "
                        "(default: opt; every candidate runs at min and max anyway); e.g. opt,max favours the "
                        "largest shapes")
    p.add_argument("--input-value", action="append", type=parse_value_option, default=[], metavar="NAME=V,V,...",
                   help="pin the value of a network input that decides shapes (a Reshape's target shape, a Slice's "
                        "starts, ...; TensorRT's shape-input values), as numbers (shape=1,3,224) or a .npy file; "
                        "the engine is then valid only for that value, and the runtime refuses any other")
    p.add_argument("--warmup", type=parse_count(0), metavar="N",
                   help="untimed runs per tactic, 0 or more (default: 1 on cpu, 2 on cuda)")
    p.add_argument("--iterations", type=parse_count(1), metavar="N",
                   help="timing samples per tactic, 1 or more; the median decides (default: 5 on cpu, 7 on cuda)")
    p.add_argument("--runs-per-sample", type=parse_count(1), metavar="N",
                   help="back-to-back runs averaged into each timing sample, like TensorRT's avgTiming; on cuda "
                        "a captured graph of them (default: 1 on cpu, 5 on cuda)")
    p.add_argument("--tie-band", type=parse_fraction, metavar="FRACTION",
                   help=f"medians within this fraction of the fastest (0 to 1; 0.03 is 3%%) are near-ties, decided "
                        f"by tactic priority (default: {DEFAULT_TIE_BAND})")
    p.add_argument("--seed", type=parse_seed,
                   help="seed of the random timing inputs and of the golden record's inputs (the values run, verify "
                        "and compare --seed draw from the same seed), 0 or more (default: 0)")
    p.add_argument("--workspace", type=parse_bytes, metavar="SIZE",
                   help="largest workspace a tactic may use, e.g. 256M (default: 1G)")
    add_max_memory_option(p, "the build (its weights, activations, workspace and timing buffers at once; not "
                             "recorded, so it never changes the engine)")
    p.add_argument("--tactic-sources", type=parse_tactic_sources, metavar="LIST",
                   help=f"comma-separated tactic sources to allow, one or more (default: all of "
                        f"{','.join(TACTIC_SOURCES)})")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="TensorRT's builder flags: fp32 is strict float32 (the default); tf32 also allows TF32 "
                        "tensor cores (10-bit mantissa inputs, float32 accumulation) in float32 GEMMs and "
                        "convolutions; fp16 (bf16) runs every layer that can in float16 (bfloat16), with float32 "
                        "accumulation, casting at the engine's inputs and outputs, which keep their dtypes. The "
                        "manifest records each layer's precision")
    graphs = p.add_mutually_exclusive_group()
    graphs.add_argument("--cuda-graph", dest="cuda_graph", action="store_const", const=True,
                        help="execution contexts capture their run into a CUDA graph on first use and replay it "
                             "(the default on cuda; tactics that cannot be captured are then not considered)")
    graphs.add_argument("--no-cuda-graph", dest="cuda_graph", action="store_const", const=False,
                        help="run every layer's launches eagerly, and consider tactics that cannot be captured")
    determinism = p.add_mutually_exclusive_group()
    determinism.add_argument("--deterministic", dest="allow_nondeterministic", action="store_const", const=False,
                             help="only tactics that are run-to-run deterministic (the default); the manifest "
                                  "records every tactic this excludes")
    determinism.add_argument("--allow-nondeterministic", dest="allow_nondeterministic", action="store_const",
                             const=True, help="also consider tactics that are not run-to-run deterministic")
    p.add_argument("--force-tactic", action="append", type=parse_pair("LAYER=TACTIC"), default=[],
                   metavar="LAYER=TACTIC",
                   help="force a tactic on a layer, or on every layer of an op (Conv=cuda_direct); repeatable. "
                        "Not with --replay")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document on stdout instead of the summary: engine and manifest paths and "
                        "sha256, each layer's chosen tactic and timing, the timing totals, build seconds and the "
                        "warnings (progress and the log stay on stderr)")
    p.set_defaults(run=run)


def parse_profile_timing(text: str) -> tuple[str, ...]:
    values = tuple(v.strip() for v in text.split(","))
    if "opt" not in values or set(values) - {"min", "opt", "max"} or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"{text!r}: give opt and any of min and max, each once (opt,max)")
    return tuple(w for w in ("min", "opt", "max") if w in values)


def parse_tactic_sources(text: str) -> tuple[str, ...]:
    """An argparse type for --tactic-sources: known source names, at least one (none would leave every layer
    without a tactic, which the build could only report as exit code 6 after importing the model)."""
    sources = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in sources if s not in TACTIC_SOURCES]
    if not sources or unknown:
        found = "names no tactic source" if not sources else f"names unknown source(s) {', '.join(unknown)}"
        raise argparse.ArgumentTypeError(f"{text!r} {found}; give one or more of {','.join(TACTIC_SOURCES)}, "
                                         "comma-separated")
    return sources


class CliProgress(ProgressMonitor):
    """Build progress on stderr. On a terminal, one updating line. Off a terminal (CI logs), a line every tenth of
    the layers or every ``interval`` seconds, whichever comes first, so a long build is never silent. With
    --verbose the logger already prints every layer's line, so this prints only the phase headers (each layer
    once, not twice)."""

    def __init__(self, verbose: bool, interval: float = 5.0) -> None:
        self.verbose, self.tty, self.total, self.interval = verbose, stderr_is_tty(), 0, interval
        self._last = 0.0

    def phase_start(self, phase: str, parent: str | None, num_steps: int) -> None:
        self.total = num_steps
        self._last = time.monotonic()
        print(f"{phase}: {num_steps} layers", file=sys.stderr, flush=True)

    def step_complete(self, phase: str, step: int, message: str) -> bool:
        if self.verbose:
            return True
        if self.tty:
            width = 30
            done = int(width * (step + 1) / max(self.total, 1))
            text = message if len(message) < 90 else message[:87] + "..."
            print(f"\r[{'#' * done}{'.' * (width - done)}] {text:<90}", end="", file=sys.stderr, flush=True)
            return True
        now = time.monotonic()
        every = max(1, self.total // 10)
        if (step + 1) % every == 0 or step + 1 == self.total or now - self._last >= self.interval:
            self._last = now
            print(f"{phase}: {step + 1}/{self.total} layers; {message}", file=sys.stderr, flush=True)
        return True

    def phase_finish(self, phase: str) -> None:
        if self.tty and not self.verbose:
            print(file=sys.stderr, flush=True)


def _explicit_options(args: argparse.Namespace) -> dict[str, Any]:
    """The build-config fields the command line sets explicitly (None means: not given)."""
    given = {
        "backend": args.backend, "warmup": args.warmup, "iterations": args.iterations,
        "runs_per_sample": args.runs_per_sample, "seed": args.seed,
        "max_workspace_bytes": args.workspace, "tie_band": args.tie_band, "tactic_sources": args.tactic_sources,
        "determinism": {True: "any", False: "run_to_run", None: None}[args.allow_nondeterministic],
        "precision": args.precision, "cuda_graph": args.cuda_graph, "max_memory": args.max_memory,
        "device": args.device, "profile_timing": args.profile_timing,
    }
    return {k: v for k, v in given.items() if v is not None}


class WarningsKept(Logger):
    """A Logger that also keeps every warning, whatever its threshold, for ``build --json``'s ``warnings``."""

    def __init__(self, min_severity: Severity) -> None:
        super().__init__(min_severity)
        self.warnings: list[str] = []

    def log(self, severity: Severity, message: str) -> None:
        if severity == Severity.WARNING:
            with self._lock:
                self.warnings.append(message)
        super().log(severity, message)


def _same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # a hard link, or another spelling realpath does not resolve
    except OSError:
        return False


def check_output_paths(model: str, engine: str, manifest: str) -> None:
    """Refuse, before any work, outputs that would overwrite the model or each other, or that would pass for a
    model (a .onnx name): a UsageError, exit code 2."""
    stem = os.path.splitext(os.path.basename(model))[0] or "model"
    for option, path in (("--output (the engine)", engine), ("--manifest", manifest)):
        if _same_file(path, model):
            raise UsageError(f"{option} {path!r} is the model file itself; the build would overwrite the model it "
                             f"reads. Write the engine elsewhere, e.g. -o {stem}.engine")
        if path.lower().endswith(".onnx"):
            raise UsageError(f"{option} {path!r} has the .onnx extension of a model, but an engine and a manifest "
                             f"are not ONNX files; name them e.g. -o {stem}.engine (the manifest then defaults to "
                             f"{stem}.manifest.json)")
    if _same_file(engine, manifest):
        raise UsageError(f"--manifest {manifest!r} is the engine path too; the two files need two paths (leave "
                         f"--manifest out for {default_manifest_path(engine)!r})")


def _replayed(path: str) -> Manifest:
    """The manifest to replay: a manifest file, or the pinned manifest an engine file embeds."""
    side = read_engine_or_manifest(path, "--replay", "a build is replayed from the manifest or engine of an earlier "
                                                    "build, never from a model")
    return Manifest(pinned=side.pinned, evidence=side.evidence, engine=side.engine)


def _run_on_devices(args: argparse.Namespace, engine_path: str, manifest_path: str) -> int:
    """``--devices``: one build per device in parallel processes, then the comparison (exit 0 either way: devices
    that chose differently are a finding, shown, not an error)."""
    check_devices_options(args)
    backend = args.backend or "auto"
    if backend == "auto":
        backend = "cuda" if cuda_unavailable_reason() is None else "cpu"
    devices = resolve_devices(args.devices, backend)
    for device in devices:
        check_output_paths(args.model, device_path(engine_path, device), device_path(manifest_path, device))
        check_output_path(device_path(engine_path, device), "--output (an engine per device)")
        check_output_path(device_path(manifest_path, device), "--manifest (a manifest per device)")
    if not args.quiet:
        print(f"building on {len(devices)} device(s) in parallel: {', '.join(map(str, devices))}", file=sys.stderr)
    args.output, args.manifest = engine_path, manifest_path
    results, wall = build_on_devices(run, args, devices)
    text, _ = report(results, wall)
    print(text)
    return 0


def run(args: argparse.Namespace) -> int:
    severity = Severity.VERBOSE if args.verbose > 1 else Severity.WARNING if not args.verbose else Severity.INFO
    logger = WarningsKept(Severity.ERROR if args.quiet else severity)
    engine_path = args.output or default_engine_path(args.model)
    manifest_path = args.manifest or default_manifest_path(engine_path)
    check_output_paths(args.model, engine_path, manifest_path)
    if args.devices is not None:
        return _run_on_devices(args, engine_path, manifest_path)
    check_output_path(engine_path, "--output (the engine)")  # before a build that may take minutes
    check_output_path(manifest_path, "--manifest")
    if args.timing_cache:
        check_output_path(args.timing_cache, "--timing-cache")  # read now, written after the build
    if args.replay and args.force_tactic:
        raise UsageError("--force-tactic and --replay cannot be combined: a replay forces the manifest's tactics")
    replayed = _replayed(args.replay) if args.replay else None
    profiles = profiles_from_options(args.profiles)
    if replayed is not None and profiles:
        raise UsageError("--profile and --replay cannot be combined: a replay builds the manifest's profiles")
    if replayed is not None:
        profiles = profiles_from_manifest(replayed)
    network, _ = network_from_onnx_path(args.model, logger, dict(args.input_shape), dict(args.input_value),
                                        profiles=profiles)
    if replayed is not None:
        config = BuilderConfig.from_record(replayed.pinned.config)
        config.algorithm_selector = ReplaySelector(replayed, args.env_policy, logger)
    else:
        config = BuilderConfig()
        if args.force_tactic:
            config.algorithm_selector = ForcingSelector(dict(args.force_tactic))
    for key, value in _explicit_options(args).items():
        setattr(config, key, value)
    for profile in profiles:
        config.add_optimization_profile(profile)
    cache = TimingCache.load(args.timing_cache) if args.timing_cache else None
    config.timing_cache = cache
    config.progress_monitor = None if args.quiet else CliProgress(args.verbose > 0)
    result = Builder(logger).build(network, config)
    manifest_bytes = manifest_to_json(result.manifest)
    # The pair is written together, the manifest renamed last, the two renames under a lock per output and with
    # SIGINT/SIGTERM deferred until both are done: never a new file of one build beside an old one of another.
    atomic_write_all([(engine_path, result.engine), (manifest_path, manifest_bytes)])
    if cache is not None:
        cache.save(args.timing_cache)
    selector = config.algorithm_selector
    verdict = selector.digest_verdict if isinstance(selector, ReplaySelector) else None
    if args.json:
        print_json(build_document(result.manifest, engine_path, result.engine, manifest_path, manifest_bytes,
                                  args.replay, verdict, logger.warnings))
        return 0
    evidence = result.manifest.evidence
    pinned = result.manifest.pinned
    print(f"engine    {engine_path} ({len(result.engine)} bytes)")
    print(f"sha256    {result.engine_sha256}")
    print(f"manifest  {manifest_path}")
    print(f"backend   {pinned.config.backend} ({evidence.backend_reason if evidence else ''})")
    if pinned.dynamic is not None:
        for index, record in enumerate(pinned.dynamic.profiles):
            shapes = ", ".join(f"{name} {':'.join('x'.join(map(str, s)) for s in triple)}"
                               for name, triple in record.inputs.items())
            print(f"profile   {index}: {shapes}")
    if verdict is not None:
        print(f"verified  {verdict}")
    if evidence is not None:
        mode = f"replay of {args.replay}, every decision honoured" if args.replay else "timed build"
        cached = f", {evidence.timing_cache_hits} from the timing cache" if cache is not None else ""
        print(f"layers    {len(pinned.layers)}, {evidence.tactics_timed} tactic timings{cached}, "
              f"{evidence.wall_seconds:.2f} s ({mode})")
    return 0


def build_document(manifest: Manifest, engine_path: str, engine: bytes, manifest_path: str, manifest_bytes: bytes,
                   replay: str | None, verdict: str | None, warnings: list[str]) -> dict[str, Any]:
    """What ``build --json`` prints: the files and their digests, each layer's decision with the chosen tactic's
    median, the timing totals, the build's seconds and its warnings."""
    pinned, evidence = manifest.pinned, manifest.evidence
    chosen = {}
    for record in evidence.layers if evidence is not None else []:
        winner = next((c for c in record.candidates if c.status == "chosen"), None)
        chosen[record.key] = (winner, len(record.candidates),
                              sum(1 for c in record.candidates if c.status != "excluded"))
    layers = []
    for index, layer in enumerate(pinned.layers):
        winner, candidates, eligible = chosen.get(layer.key, (None, 0, 0))
        layers.append({
            "index": index, "name": layer.name, "op": layer.op, "precision": layer.precision,
            "tactic": {"family": layer.tactic.family, "name": layer.tactic.name, "version": layer.tactic.version,
                       "label": layer.tactic.label, "code_sha256": layer.tactic.digest},
            "workspace_bytes": layer.workspace_bytes, "candidates": candidates, "eligible": eligible,
            "median_ns": winner.median_ns if winner is not None else None,
            "reason": winner.reason if winner is not None else None,
        })
    return {
        "engine": {"path": engine_path, "sha256": sha256_hex(engine), "size_bytes": len(engine)},
        "manifest": {"path": manifest_path, "sha256": sha256_hex(manifest_bytes)},
        "backend": pinned.config.backend,
        "mode": "replay" if replay else "timed",
        "replay": {"source": replay, "engine_digest": verdict} if replay else None,
        "layers": layers,
        "timings": {
            "tactics_timed": evidence.tactics_timed if evidence else 0,
            "timing_cache_hits": evidence.timing_cache_hits if evidence else 0,
            "timing_clock": evidence.timing_clock if evidence else None,
            "phase_seconds": dict(evidence.phase_seconds) if evidence else {},
            "chosen_median_ns_total": sum(layer["median_ns"] or 0 for layer in layers),
        },
        "build_seconds": evidence.wall_seconds if evidence else None,
        "warnings": warnings,
    }

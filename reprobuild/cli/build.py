"""``reprobuild build``: ONNX model -> timed (or replayed) build -> engine file + manifest."""

from __future__ import annotations

import argparse
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
from reprobuild.cli.common import (
    Subcommands,
    add_max_memory_option,
    default_engine_path,
    default_manifest_path,
    parse_bytes,
    parse_pair,
    parse_seed,
    parse_shape_option,
    parse_value_option,
    stderr_is_tty,
)
from reprobuild.envpolicy import POLICIES
from reprobuild.errors import UsageError
from reprobuild.fileio import atomic_write_all, check_writable
from reprobuild.frontend import network_from_onnx_path
from reprobuild.logger import Logger, Severity
from reprobuild.manifest import manifest_to_json, read_manifest


def add_parser(sub: Subcommands) -> None:
    p = sub.add_parser(
        "build", help="build an engine from an ONNX model, timing tactics per layer (or replaying a manifest)",
        description="Import an ONNX model, time every eligible tactic of every layer on seeded random inputs, "
                    "keep the fastest, and write the engine and a manifest that records every decision. With "
                    "--replay, force the decisions a manifest records instead: nothing is timed, and any "
                    "mismatch with the model, config, installed tactics or environment is an error.",
    )
    p.add_argument("model", help="the ONNX model file")
    p.add_argument("-o", "--output", metavar="ENGINE",
                   help="engine file to write (default: the model's name with .engine, in the current directory)")
    p.add_argument("--manifest", metavar="FILE",
                   help="manifest to write (default: the engine path with .manifest.json instead of .engine)")
    p.add_argument("--replay", metavar="MANIFEST",
                   help="force the tactics this manifest records; build options left out are taken from it, and "
                        "options given must equal it")
    p.add_argument("--env-policy", choices=POLICIES, default="strict",
                   help="with --replay: how to treat environment differences from the manifest. strict refuses "
                        "any; compatible allows only those that cannot change results; ignore warns "
                        "(default: strict)")
    p.add_argument("--timing-cache", metavar="FILE",
                   help="reuse tactic timings stored in FILE and add the new ones (created if missing)")
    p.add_argument("--backend", choices=("auto", "cpu", "cuda"),
                   help="where to build and run (default: auto, cuda when a device is usable)")
    p.add_argument("--input-shape", action="append", type=parse_shape_option, default=[], metavar="NAME=DxD...",
                   help="fix the shape of a network input with dynamic dimensions, e.g. data=1x3x224x224")
    p.add_argument("--input-value", action="append", type=parse_value_option, default=[], metavar="NAME=V,V,...",
                   help="pin the value of a network input that decides shapes (a Reshape's target shape, a Slice's "
                        "starts, ...; TensorRT's shape-input values), as numbers (shape=1,3,224) or a .npy file; "
                        "the engine is then valid only for that value, and the runtime refuses any other")
    p.add_argument("--warmup", type=int, help="untimed runs per tactic (default: 1 on cpu, 2 on cuda)")
    p.add_argument("--iterations", type=int, help="timing samples per tactic; the median decides "
                                                  "(default: 5 on cpu, 7 on cuda)")
    p.add_argument("--runs-per-sample", type=int, metavar="N",
                   help="back-to-back runs averaged into each timing sample, like TensorRT's avgTiming; on cuda "
                        "a captured graph of them (default: 1 on cpu, 5 on cuda)")
    p.add_argument("--tie-band", type=float, metavar="FRACTION",
                   help=f"medians within this fraction of the fastest are near-ties, decided by tactic priority "
                        f"(default: {DEFAULT_TIE_BAND})")
    p.add_argument("--seed", type=parse_seed, help="seed of the random timing inputs, 0 or more (default: 0)")
    p.add_argument("--workspace", type=parse_bytes, metavar="SIZE",
                   help="largest workspace a tactic may use, e.g. 256M (default: 1G)")
    add_max_memory_option(p, "the build may need at once (weights, activations, workspace, timing buffers; not "
                             "recorded, so it never changes the engine)")
    p.add_argument("--tactic-sources", metavar="LIST",
                   help=f"comma-separated tactic sources to allow (default: all of {','.join(TACTIC_SOURCES)})")
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
    p.set_defaults(run=run)


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
    sources = (tuple(s.strip() for s in args.tactic_sources.split(",") if s.strip())
               if args.tactic_sources is not None else None)
    given = {
        "backend": args.backend, "warmup": args.warmup, "iterations": args.iterations,
        "runs_per_sample": args.runs_per_sample, "seed": args.seed,
        "max_workspace_bytes": args.workspace, "tie_band": args.tie_band, "tactic_sources": sources,
        "determinism": {True: "any", False: "run_to_run", None: None}[args.allow_nondeterministic],
        "precision": args.precision, "cuda_graph": args.cuda_graph, "max_memory": args.max_memory,
    }
    return {k: v for k, v in given.items() if v is not None}


def run(args: argparse.Namespace) -> int:
    logger = Logger(Severity.VERBOSE if args.verbose > 1 else Severity.WARNING if not args.verbose else Severity.INFO)
    if args.quiet:
        logger = Logger(Severity.ERROR)
    engine_path = args.output or default_engine_path(args.model)
    manifest_path = args.manifest or default_manifest_path(engine_path)
    check_writable(engine_path, "--output (the engine)")  # before a build that may take minutes
    check_writable(manifest_path, "--manifest")
    network, _ = network_from_onnx_path(args.model, logger, dict(args.input_shape), dict(args.input_value))
    if args.replay and args.force_tactic:
        raise UsageError("--force-tactic and --replay cannot be combined: a replay forces the manifest's tactics")
    if args.replay:
        replayed = read_manifest(args.replay)
        config = BuilderConfig.from_record(replayed.pinned.config)
        config.algorithm_selector = ReplaySelector(replayed, args.env_policy, logger)
    else:
        config = BuilderConfig()
        if args.force_tactic:
            config.algorithm_selector = ForcingSelector(dict(args.force_tactic))
    for key, value in _explicit_options(args).items():
        setattr(config, key, value)
    cache = TimingCache.load(args.timing_cache) if args.timing_cache else None
    config.timing_cache = cache
    config.progress_monitor = None if args.quiet else CliProgress(args.verbose > 0)
    result = Builder(logger).build(network, config)
    # The pair is written together, the manifest renamed last: never a new manifest beside an old engine, and a
    # kill between the two renames leaves an old manifest whose engine.sha256 gives the mismatch away.
    atomic_write_all([(engine_path, result.engine), (manifest_path, manifest_to_json(result.manifest))])
    if cache is not None:
        cache.save(args.timing_cache)
    evidence = result.manifest.evidence
    pinned = result.manifest.pinned
    print(f"engine    {engine_path} ({len(result.engine)} bytes)")
    print(f"sha256    {result.engine_sha256}")
    print(f"manifest  {manifest_path}")
    print(f"backend   {pinned.config.backend} ({evidence.backend_reason if evidence else ''})")
    if isinstance(config.algorithm_selector, ReplaySelector):
        print(f"verified  {config.algorithm_selector.digest_verdict}")
    if evidence is not None:
        mode = f"replay of {args.replay}, every decision honoured" if args.replay else "timed build"
        cached = f", {evidence.timing_cache_hits} from the timing cache" if cache is not None else ""
        print(f"layers    {len(pinned.layers)}, {evidence.tactics_timed} tactic timings{cached}, "
              f"{evidence.wall_seconds:.2f} s ({mode})")
    return 0

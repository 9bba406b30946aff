"""``reprobuild build``: ONNX model -> timed build -> engine file + manifest."""

from __future__ import annotations

import argparse
import sys

from reprobuild.builder import Builder, BuilderConfig, ProgressMonitor
from reprobuild.builder.config import TACTIC_SOURCES
from reprobuild.cli.common import (
    Subcommands,
    default_engine_path,
    default_manifest_path,
    parse_bytes,
    parse_shape_option,
    stderr_is_tty,
)
from reprobuild.fileio import atomic_write
from reprobuild.frontend import network_from_onnx_path
from reprobuild.logger import Logger, Severity
from reprobuild.manifest import write_manifest


def add_parser(sub: Subcommands) -> None:
    p = sub.add_parser(
        "build", help="build an engine from an ONNX model, timing tactics per layer",
        description="Import an ONNX model, time every eligible tactic of every layer on seeded random inputs, "
                    "keep the fastest, and write the engine and a manifest that records every decision.",
    )
    p.add_argument("model", help="the ONNX model file")
    p.add_argument("-o", "--output", metavar="ENGINE",
                   help="engine file to write (default: the model's name with .engine, in the current directory)")
    p.add_argument("--manifest", metavar="FILE",
                   help="manifest to write (default: the engine path with .manifest.json instead of .engine)")
    p.add_argument("--backend", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to build and run (default: auto, cuda when a device is usable)")
    p.add_argument("--input-shape", action="append", type=parse_shape_option, default=[], metavar="NAME=DxD...",
                   help="fix the shape of a network input with dynamic dimensions, e.g. data=1x3x224x224")
    p.add_argument("--warmup", type=int, help="untimed runs per tactic (default: 1 on cpu, 3 on cuda)")
    p.add_argument("--iterations", type=int, help="timed runs per tactic; the median decides "
                                                  "(default: 5 on cpu, 11 on cuda)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random timing inputs (default: 0)")
    p.add_argument("--workspace", type=parse_bytes, default=1 << 30, metavar="SIZE",
                   help="largest workspace a tactic may use, e.g. 256M (default: 1G)")
    p.add_argument("--tactic-sources", metavar="LIST",
                   help=f"comma-separated tactic sources to allow (default: all of {','.join(TACTIC_SOURCES)})")
    p.add_argument("--allow-nondeterministic", action="store_true",
                   help="also consider tactics that are not run-to-run deterministic (default: excluded)")
    p.set_defaults(run=run)


class CliProgress(ProgressMonitor):
    """One updating line on a terminal; on a pipe, every layer with --verbose, otherwise just the summary."""

    def __init__(self, verbose: bool) -> None:
        self.verbose, self.tty, self.total = verbose, stderr_is_tty(), 0

    def phase_start(self, phase: str, parent: str | None, num_steps: int) -> None:
        self.total = num_steps
        print(f"{phase}: {num_steps} layers", file=sys.stderr, flush=True)

    def step_complete(self, phase: str, step: int, message: str) -> bool:
        if self.verbose:
            print(message, file=sys.stderr, flush=True)
        elif self.tty:
            width = 30
            done = int(width * (step + 1) / max(self.total, 1))
            text = message if len(message) < 90 else message[:87] + "..."
            print(f"\r[{'#' * done}{'.' * (width - done)}] {text:<90}", end="", file=sys.stderr, flush=True)
        return True

    def phase_finish(self, phase: str) -> None:
        if self.tty and not self.verbose:
            print(file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    logger = Logger(Severity.VERBOSE if args.verbose > 1 else Severity.WARNING if not args.verbose else Severity.INFO)
    if args.quiet:
        logger = Logger(Severity.ERROR)
    network, _ = network_from_onnx_path(args.model, logger, dict(args.input_shape))
    config = BuilderConfig(
        backend=args.backend, warmup=args.warmup, iterations=args.iterations, seed=args.seed,
        max_workspace_bytes=args.workspace,
        determinism="any" if args.allow_nondeterministic else "run_to_run",
        tactic_sources=tuple(s.strip() for s in args.tactic_sources.split(",") if s.strip())
        if args.tactic_sources else None,
        progress_monitor=None if args.quiet else CliProgress(args.verbose > 0),
    )
    result = Builder(logger).build(network, config)
    engine_path = args.output or default_engine_path(args.model)
    manifest_path = args.manifest or default_manifest_path(engine_path)
    atomic_write(engine_path, result.engine)
    write_manifest(manifest_path, result.manifest)
    evidence = result.manifest.evidence
    pinned = result.manifest.pinned
    print(f"engine    {engine_path} ({len(result.engine)} bytes)")
    print(f"sha256    {result.engine_sha256}")
    print(f"manifest  {manifest_path}")
    print(f"backend   {pinned.config.backend} ({evidence.backend_reason if evidence else ''})")
    if evidence is not None:
        print(f"layers    {len(pinned.layers)}, {evidence.tactics_timed} tactic timings, "
              f"{evidence.wall_seconds:.2f} s")
    return 0

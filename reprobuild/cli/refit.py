"""``reprobuild refit``: an engine + a new ONNX model of the same graph -> the engine with the model's weights,
every tactic decision kept and nothing timed, and its manifest."""

from __future__ import annotations

import argparse

from reprobuild.builder.refit import Refitter
from reprobuild.cli.common import default_manifest_path, read_engine_file
from reprobuild.cli.parsing import Subcommands
from reprobuild.core.fileio import check_output_path
from reprobuild.core.logger import Logger, Severity
from reprobuild.environment.policy import POLICIES
from reprobuild.manifest import read_manifest

EPILOG = """exit codes of refit:
    0  refitted: the engine and manifest are written
    2  usage error: a bad option or path, or --engine-manifest is not ENGINE's manifest
    3  the new model is invalid or uses something unsupported
    4  ENGINE (or --engine-manifest) is unreadable, corrupted or of another format version
    6  ENGINE uses a tactic this installation lacks or changed, or a plugin op whose plugin is not registered
    8  the new model does not fit ENGINE: its network differs in more than weight values (another op,
       attribute, shape, dtype or layer), or a recorded tactic cannot run the new weights; rebuild instead
    9  this machine differs from the one ENGINE was built on, and --env-policy refuses that
   13  the refit needs more memory than the machine has, or the disk is full"""


def add_parser(sub: Subcommands) -> None:
    p = sub.add_parser(
        "refit", help="put a new model's weights into an engine, keeping every tactic decision (no timing)",
        description="TensorRT's refit: take the weights of NEW.onnx (the same graph as the model ENGINE was built "
                    "from, with other initializer values), run them through the frontend and build passes that "
                    "ENGINE's manifest records, and write the engine with those weights. Every tactic decision is "
                    "kept and nothing is timed; the new manifest differs from ENGINE's only in what weight values "
                    "decide (the model record, each layer's structural key, the golden digests) and in its "
                    "evidence, which says it is a refit. A model whose network differs in anything but weight "
                    "values is refused, naming the first layer that differs: rebuild it with `reprobuild build`. "
                    "`reprobuild build NEW.onnx --replay OUT.manifest.json` makes the refitted engine again.",
    )
    p.epilog = EPILOG
    p.add_argument("engine", metavar="ENGINE", help="the engine to refit")
    p.add_argument("--model", required=True, metavar="NEW.onnx",
                   help="the ONNX model with the new weights: the same graph as ENGINE's model")
    p.add_argument("-o", "--output", required=True, metavar="OUT.engine",
                   help="the refitted engine to write; its directory must exist; a symbolic link, a special file "
                        "(/dev/null, a FIFO) and - are refused")
    p.add_argument("--manifest", metavar="FILE",
                   help="manifest to write (default: the output path with .manifest.json instead of .engine)")
    p.add_argument("--engine-manifest", metavar="FILE",
                   help="the manifest written with ENGINE: its timing evidence of every candidate is carried into "
                        "the new manifest (without it, the new evidence records the refit alone)")
    p.add_argument("--env-policy", choices=POLICIES, default="strict",
                   help="how to treat differences from the environment ENGINE was built in: strict refuses any; "
                        "compatible allows only those that cannot change results; ignore warns. The new manifest "
                        "records this machine's environment (default: strict)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    logger = Logger(Severity.VERBOSE if args.verbose > 1 else Severity.WARNING if not args.verbose else Severity.INFO)
    if args.quiet:
        logger = Logger(Severity.ERROR)
    manifest_path = args.manifest or default_manifest_path(args.output)
    check_output_path(args.output, "--output (the engine)")
    check_output_path(manifest_path, "--manifest")
    engine = read_engine_file(args.engine)
    original = read_manifest(args.engine_manifest) if args.engine_manifest else None
    refitter = Refitter(engine, logger, manifest=original, env_policy=args.env_policy)
    result = refitter.refit_from_model(args.model)
    result.save(args.output, manifest_path)
    evidence = result.manifest.evidence
    print(f"engine    {args.output} ({len(result.engine)} bytes)")
    print(f"sha256    {result.engine_sha256}")
    print(f"manifest  {manifest_path}")
    print(f"refit of  {args.engine} (sha256 {refitter.engine_sha256})")
    print(f"weights   {len(refitter.get_all_weights())} replaced from {args.model}; "
          f"{len(result.manifest.pinned.layers)} layers, every tactic kept, "
          f"{evidence.tactics_timed if evidence else 0} tactic timings"
          + (", timing evidence carried over from " + args.engine_manifest if original is not None else ""))
    return 0

"""``reprobuild attest``: an engine's build provenance as an in-toto Statement (SLSA provenance v1), to sign."""

from __future__ import annotations

import argparse
import os

from reprobuild.cli.common import read_engine_file
from reprobuild.cli.parsing import Subcommands
from reprobuild.core.fileio import STDOUT, check_output_path, write_output
from reprobuild.provenance.attest import make_statement, statement_bytes


def add_parser(sub: Subcommands) -> None:
    p = sub.add_parser(
        "attest", help="write an engine's build provenance (in-toto Statement, SLSA provenance v1)",
        description="Write an in-toto Statement v1 whose predicate is SLSA provenance v1: the subject is the engine "
                    "file (name and sha256); the resolved dependencies are the ONNX model (the digest the engine "
                    "records, checked against --model when given), the pinned manifest the engine embeds, and the "
                    "toolchain; the external parameters are the build config and bindings. Canonical JSON (sorted "
                    "keys), the same bytes for the same inputs, ready for cosign or in-toto's tools to sign.",
    )
    p.add_argument("engine", help="the engine file")
    p.add_argument("--manifest", metavar="FILE",
                   help="the manifest written with the engine: checked to be its pair, listed as a byproduct")
    p.add_argument("--model", metavar="MODEL.onnx",
                   help="the ONNX model: its sha256 must equal the one the engine records")
    p.add_argument("-o", "--output", metavar="FILE", default=STDOUT,
                   help="write the statement to FILE, or to standard output with - (default: -)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_output_path(args.output, "--output (the statement)", stdout=True)
    statement = make_statement(read_engine_file(args.engine), os.path.basename(args.engine), args.manifest,
                               args.model)
    data = statement_bytes(statement)
    write_output(args.output, data)
    if args.output != STDOUT and not args.quiet:
        print(f"statement {args.output} (in-toto Statement v1, SLSA provenance v1) for "
              f"{statement['subject'][0]['name']} sha256 {statement['subject'][0]['digest']['sha256']}")
    return 0

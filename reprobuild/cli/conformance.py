"""``reprobuild conformance``: build and run ONNX's own test suites, case by case, and say what passes."""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import onnx

from reprobuild.cli.common import ProgressBar
from reprobuild.cli.parsing import Subcommands
from reprobuild.conformance import load_suite, run_case
from reprobuild.conformance.cases import Case
from reprobuild.conformance.report import to_json, to_markdown, to_text
from reprobuild.core.errors import ConformanceError, UsageError
from reprobuild.core.fileio import STDOUT, check_output_path, write_output

EPILOG = """results:
  pass     every output has the expected shape, dtype and values (within the case's tolerance)
  fail     a wrong result: another shape, dtype or value
  refused  reprobuild declined with a typed error: an unsupported op, attribute, dtype or form
  error    any other exception: a bug in reprobuild

exit codes: 0 when no case failed or erred (refusals are allowed), 12 otherwise, 2 for a bad option."""


def add_parser(sub: Subcommands) -> None:
    p = sub.add_parser(
        "conformance", help="build and run ONNX's node test suite and test models, and report what passes",
        description="Generate ONNX's node test suite from the definitions the installed onnx wheel ships (as "
                    "'backend-test-tools generate-data' does), and load its light models (weights re-randomized, "
                    "onnxruntime as the reference) and its pytorch-converted/pytorch-operator models. Build and "
                    "run each case through the whole pipeline and compare with the expected outputs. Inputs that "
                    "decide shapes are pinned to the case's values (as --input-value would). onnxruntime, the "
                    "light suite's reference, logs only its errors (its warnings too with -v).",
    )
    p.epilog = EPILOG
    p.add_argument("--suite", action="append", choices=("node", "light", "pytorch"),
                   help="which suites to run; repeatable (default: all three)")
    p.add_argument("--op", action="append", default=[], metavar="OP",
                   help="only cases that contain this op (e.g. Conv); repeatable")
    p.add_argument("--case", action="append", default=[], metavar="TEXT",
                   help="only cases whose name contains TEXT; repeatable")
    p.add_argument("--backend", choices=("cpu", "cuda"), default="cpu", help="where to build and run (default: cpu)")
    p.add_argument("--jobs", type=int, default=0, metavar="N",
                   help="cases built in parallel processes (default: the number of CPUs, at most 8)")
    p.add_argument("--format", choices=("text", "markdown", "json"), default="text",
                   help="text: a table of the cases that did not pass (all of them with -v) and a summary; "
                        "markdown: the summary, the table by op and the refusal reasons (docs/conformance.md); "
                        "json: every result")
    p.add_argument("--output", metavar="FILE", default=STDOUT,
                   help="write the report to FILE, or to standard output with - (default: -)")
    p.set_defaults(run=run)


def _select(cases: list[Case], ops: list[str], names: list[str]) -> list[Case]:
    out = []
    for case in cases:
        if names and not any(n in case.name for n in names):
            continue
        if ops:
            model_ops = {n.op_type for n in onnx.ModelProto.FromString(case.model).graph.node}
            if not model_ops.intersection(ops):
                continue
        out.append(case)
    return out


def run(args: argparse.Namespace) -> int:
    suites = args.suite or ["node", "light", "pytorch"]
    if "light" in suites:
        try:
            import onnxruntime  # noqa: F401  # lazy: optional (the dev extra) and heavy; probed to name the extra
        except ImportError:
            raise UsageError("the light suite compares with onnxruntime, which is not installed "
                             "(pip install onnxruntime, or pip install -e '.[dev]'); or choose --suite node/pytorch"
                             ) from None
    if args.jobs < 0:
        raise UsageError(f"--jobs must be >= 0; got {args.jobs}")
    check_output_path(args.output, "--output", stdout=True)  # before the cases run
    cases = []
    for suite in suites:
        cases += _select(load_suite(suite), args.op, args.case)
    if not cases:
        raise UsageError("no case matches the --suite/--op/--case filters")
    jobs = args.jobs or min(8, os.cpu_count() or 1)
    progress = ProgressBar(len(cases), "conformance", enabled=not args.quiet)
    results = []
    if jobs == 1 or args.backend == "cuda":  # one process owns the GPU
        for case in cases:
            results.append(run_case(case, args.backend, args.verbose > 0))
            progress(1)
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for result in pool.map(run_case, cases, [args.backend] * len(cases), [args.verbose > 0] * len(cases),
                                   chunksize=4):
                results.append(result)
                progress(1)
    if args.format == "json":
        text = to_json(results)
    elif args.format == "markdown":
        text = to_markdown(results, markdown_header())
    else:
        text = to_text(results, args.verbose > 0)
    write_output(args.output, text.encode())
    bad = [r for r in results if r.result in ("fail", "error")]
    if bad:
        raise ConformanceError(f"{len(bad)} of {len(results)} case(s) gave a wrong result or an untyped error: "
                               + ", ".join(f"{r.suite}:{r.case} ({r.result})" for r in bad[:10])
                               + (" ..." if len(bad) > 10 else ""))
    return 0


def markdown_header() -> str:
    """The header of docs/conformance.md, with the versions that decide the suites' contents and references."""
    try:
        import onnxruntime  # lazy: optional (the dev extra) and heavy; only its version is read here

        ort = onnxruntime.__version__
    except ImportError:
        ort = "not installed"
    return f"{HEADER}\n\nVersions: onnx {onnx.__version__}, onnxruntime {ort}, numpy {np.__version__}."


HEADER = """# ONNX conformance

Generated by `reprobuild conformance --format markdown --output docs/conformance.md` (CPU backend). Every case
is parsed, built (timed tactic selection), serialized, loaded and run, and its outputs compared with the
expected ones. *refused* means reprobuild declined with a typed error that names the node, the op and what is
unsupported; *fail* (a wrong result) and *error* (an untyped exception) must stay at zero."""

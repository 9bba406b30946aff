"""``reprobuild verify``: prove that an engine computes the same bits every time, or find where it does not."""

from __future__ import annotations

import argparse
import sys

from reprobuild.attest import pair_mismatch
from reprobuild.cli.common import (
    ProgressBar,
    Subcommands,
    add_engine_input_options,
    add_max_memory_option,
    engine_inputs,
    read_engine_file,
    read_engine_or_manifest,
)
from reprobuild.engine import Runtime
from reprobuild.errors import NotDeterministicError, ToleranceError, UsageError
from reprobuild.fileio import atomic_write, check_writable
from reprobuild.locator import locate, locate_against
from reprobuild.logger import Logger, Severity
from reprobuild.textformat import table
from reprobuild.verify import Locator, VerifyPlan, check_against, verify


def add_parser(sub: Subcommands) -> None:
    p = sub.add_parser(
        "verify", help="check that identical inputs give bitwise-identical outputs",
        description="Run the same inputs through an engine again and again: repeated runs on one context, fresh "
                    "contexts, threads with contexts of their own, concurrent CUDA streams, and separate "
                    "processes; compare the sha256 of every output. Prints a verdict per dimension and the "
                    "determinism tier reached. When results differ, the divergence locator names the first layer "
                    "that computes different bits, its tactic, and by how much. With --against, also compare with "
                    "the golden output digests a manifest (or an engine's embedded manifest) recorded at build "
                    "time, in another process or on another machine.",
    )
    p.add_argument("engine", help="the engine file")
    p.add_argument("--runs", type=int, default=10, help="runs per context (default: 10)")
    p.add_argument("--contexts", type=int, default=2,
                   help="fresh contexts made one after another, one run each (default: 2)")
    p.add_argument("--threads", type=int, default=1, help="threads, each with contexts of its own (default: 1)")
    p.add_argument("--streams", type=int, default=1,
                   help="contexts per thread, each on its own CUDA stream, run concurrently (default: 1)")
    p.add_argument("--processes", type=int, default=1, help="processes running the plan at once (default: 1)")
    p.add_argument("--traced-runs", type=int, default=3,
                   help="runs that also compare every layer's outputs, so that a layer computing different bits is "
                        "caught even when later layers hide it (default: 3; 0 to skip)")
    add_engine_input_options(p, default_seed=0)
    p.add_argument("--against", metavar="MANIFEST",
                   help="also compare with the golden digests recorded in this manifest or engine file (anything "
                        "else, such as an ONNX model, is refused before any run, exit code 2)")
    p.add_argument("--report", metavar="FILE", help="write the full report as JSON")
    p.add_argument("--no-batch-invariance", action="store_true", help="skip the batch-invariance check")
    p.add_argument("--fail-on-nonfinite", action="store_true",
                   help="fail (exit code 11) when an output holds NaN or infinite values; by default verify warns "
                        "and judges only whether the bits repeat")
    add_max_memory_option(p, "the engine (its weights and the scratch memory of its live contexts; in each process)")
    p.set_defaults(run=run)


def _locator_line(found: Locator) -> str:
    if found.layer is None:
        return found.detail
    layer = found.layer
    text = f"layer {layer.index} {layer.name!r} ({layer.op}) with tactic {layer.tactic}: {found.detail}"
    if layer.differing is not None:
        text += (f"; {layer.differing} of {layer.total} elements differ, max abs {layer.max_abs:.3g}"
                 + (f", max {layer.max_ulp} ulp" if layer.max_ulp is not None else ""))
    return text


def run(args: argparse.Namespace) -> int:
    logger = Logger(Severity.INFO if args.verbose else Severity.WARNING)
    if args.report:
        check_writable(args.report, "--report")  # before a plan that may run for minutes
    side = (read_engine_or_manifest(args.against, "--against", "an engine is compared with its model by "
                                    "reprobuild compare ENGINE MODEL") if args.against else None)
    engine = Runtime(logger, max_memory=args.max_memory).deserialize_engine(read_engine_file(args.engine))
    if side is not None and side.kind == "manifest" and side.engine is not None:
        problem = pair_mismatch(side.engine.sha256, engine.sha256, args.engine)  # before any run
        if problem:
            raise UsageError(problem)
    inputs, label = engine_inputs(args, engine.inputs)
    plan = VerifyPlan(runs=args.runs, contexts=args.contexts, threads=args.threads, streams=args.streams,
                      processes=args.processes, batch_invariance=not args.no_batch_invariance,
                      traced_runs=args.traced_runs)
    plan.validate()
    progress = ProgressBar(plan.total_runs, "verify", enabled=not args.quiet)
    seed = args.seed if args.seed is not None else args.input_default_seed  # also seeds the batch-invariance check
    report = verify(engine, inputs, plan, label, progress, seed, args.max_memory)
    print(f"engine     {args.engine} ({engine.backend.name}, {engine.num_layers} layers, "
          f"sha256 {engine.sha256[:16]}...)")
    print(f"inputs     {label}")
    print(f"plan       {plan.runs} runs x {plan.threads} thread(s) x {plan.streams} stream(s) + {plan.contexts} "
          f"fresh context(s), {plan.processes} process(es): {report.total_runs} runs")
    rows = [[d.name, "not tested" if not d.tested else "identical" if d.identical else "DIFFERENT", d.detail]
            for d in report.dimensions]
    verdict = {True: "identical", False: "DIFFERENT", None: "not tested"}[report.batch_invariant]
    rows.append(["batch_invariant", verdict, report.batch_detail])
    against_ok = True
    if side is not None:
        pinned = side.pinned
        result, golden = check_against(engine, pinned)
        against_ok = result.matched
        report = report.model_copy(update={"against": result.model_dump()})
        rows.append(["against", "identical" if result.matched else "DIFFERENT", result.detail])
        if not result.matched:
            found = locate_against(engine, golden, pinned.golden.layers)
            report = report.model_copy(update={"locator": found})
    print(table(rows, ["dimension", "verdict", "detail"]))
    if not report.deterministic and report.locator is None:
        report = report.model_copy(update={"locator": locate(engine, inputs)})
    if report.locator is not None:
        print(f"locator    {_locator_line(report.locator)}")
    against = f" (against the manifest: {report.against['tier']})" if report.against else ""
    print(f"tier       {report.tier}{against}")
    print(f"speed      {report.total_runs} runs in {report.seconds:.2f} s: {report.runs_per_second:.1f} runs/s")
    for nonfinite in report.nonfinite:
        print(f"warning    not finite: {nonfinite.text}")
    if report.nonfinite and not args.fail_on_nonfinite:
        print("           (NaN and infinities that repeat bit for bit still verify as deterministic; "
              "--fail-on-nonfinite fails on them)")
    ok = report.deterministic and against_ok
    nonfinite_fails = bool(report.nonfinite) and args.fail_on_nonfinite
    verdict = "deterministic" if ok else "NOT DETERMINISTIC"
    if report.nonfinite:
        verdict += f", {len(report.nonfinite)} output(s) NOT FINITE"
    print(f"verdict    {verdict}")
    if args.report:
        atomic_write(args.report, (report.model_dump_json(indent=2) + "\n").encode())
    if not ok:
        print(f"reprobuild verify: {NotDeterministicError.summary}", file=sys.stderr)
        return NotDeterministicError.exit_code
    if nonfinite_fails:
        print(f"reprobuild verify: --fail-on-nonfinite: {'; '.join(f.text for f in report.nonfinite)}",
              file=sys.stderr)
        return ToleranceError.exit_code
    return 0


"""``reprobuild verify``: prove that an engine computes the same bits every time, or find where it does not."""

from __future__ import annotations

import argparse
import sys

from reprobuild.cli.common import (
    ProgressBar,
    add_device_option,
    add_engine_input_options,
    add_max_memory_option,
    engine_at_shape,
    engine_inputs,
    parse_sizes_option,
    read_engine_file,
    read_engine_or_manifest,
)
from reprobuild.cli.devices import parse_devices
from reprobuild.cli.parsing import Subcommands
from reprobuild.core.errors import NotDeterministicError, ToleranceError, UsageError
from reprobuild.core.fileio import check_output_path, document_on_stdout, write_output
from reprobuild.core.logger import Logger, Severity
from reprobuild.core.textformat import printable, table
from reprobuild.engine import Runtime
from reprobuild.kernels.backend import resolve_devices
from reprobuild.manifest.io import pinned_from_json
from reprobuild.manifest.pairs import pair_mismatch
from reprobuild.manifest.tamper import check_record
from reprobuild.verify.fleet import FleetPlan, engine_outline, verify_on_ray
from reprobuild.verify.locate import locate, locate_against
from reprobuild.verify.run import Locator, VerifyPlan, VerifyReport, check_against, verify
from reprobuild.verify.shapes import shape_invariance


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
                        "else, such as an ONNX model, is refused before any run, exit code 2). A manifest must be "
                        "this engine's record: one that records another engine is refused (exit code 2), one whose "
                        "pinned part differs from the one the engine embeds was edited and is refused naming every "
                        "field that differs (exit code 4)")
    p.add_argument("--report", metavar="FILE",
                   help="write the full report as JSON to FILE, or to standard output with - (the table then goes "
                        "to stderr)")
    p.add_argument("--no-batch-invariance", action="store_true", help="skip the batch-invariance check")
    p.add_argument("--shapes", action="append", type=parse_sizes_option, default=[], metavar="DIM=S1,S2,...",
                   help="a dynamic engine: run one sample alone and inside every batch size listed, at every "
                        "position, and compare its bits (the first --shapes names the batch dimension, e.g. "
                        "--shapes batch=1,3,8,32; more, such as --shapes sequence=16,32, repeat the check at each "
                        "of their sizes); with the profile of --profile-index. A difference fails verify (exit "
                        "code 10)")
    p.add_argument("--fail-on-nonfinite", action="store_true",
                   help="fail (exit code 11) when an output holds NaN or infinite values; by default verify warns "
                        "and judges only whether the bits repeat")
    add_max_memory_option(p, "the engine (its weights and the scratch memory of its live contexts; in each process)")
    add_device_option(p, "; --processes run there too")
    several = p.add_argument_group(
        "several devices", "Run the engine on several GPUs, or on a Ray fleet, and compare their bits: the "
                           "cross_device dimension. Devices compare only with devices of the same GPU model; a model "
                           "with one device is reported as not comparable, and cross_device stays untested.")
    several.add_argument("--devices", type=parse_devices, metavar="all|0,1,...",
                         help="also run the engine in one worker process per listed GPU (all: every visible GPU), "
                              "each with --runs runs on one context, --contexts fresh contexts and --traced-runs (at "
                              "least 1) traced runs, and compare outputs and every layer's digest across devices; "
                              "this process runs its plan on the first one. A cpu engine has one device, 0")
    several.add_argument("--ray", metavar="ADDRESS",
                         help="run the verification as Ray tasks, one GPU each (one CPU each for a cpu engine), and "
                              "compare their digests here, naming any task (node and GPU) that differs. ADDRESS: local "
                              "(a Ray instance on this machine) or a cluster's (ray://HOST:10001, auto). Needs the "
                              "extra: pip install -e '.[ray]'")
    several.add_argument("--ray-tasks", type=int, metavar="N",
                         help="Ray tasks to run (default: one per GPU of the cluster; 2 for a cpu engine)")
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


def _check_fleet_options(args: argparse.Namespace) -> None:
    """--ray runs nothing here: the options that need this process to run the engine are refused with it."""
    if args.device is not None and args.devices is not None:
        raise UsageError(f"--device {args.device} and --devices cannot be combined: --devices lists every GPU to run "
                         "on, and this process runs its plan on the first one listed")
    if args.ray_tasks is not None and args.ray is None:
        raise UsageError("--ray-tasks needs --ray ADDRESS (use --ray local for a Ray instance on this machine)")
    if args.ray is None:
        return
    clashes = [name for name, given in (("--devices", args.devices is not None), ("--device", args.device is not None),
                                        ("--against", args.against),
                                        ("--threads", args.threads != 1), ("--streams", args.streams != 1),
                                        ("--processes", args.processes != 1)) if given]
    if clashes:
        raise UsageError(f"--ray runs each task as one process with one thread and one stream on one GPU, and "
                         f"cannot be combined with {', '.join(clashes)}; use --ray-tasks N for more tasks, or run "
                         "those checks without --ray")


def run(args: argparse.Namespace) -> int:
    with document_on_stdout(args.report):  # --report -: the JSON alone on stdout
        return _verify(args)


def _verify(args: argparse.Namespace) -> int:
    logger = Logger(Severity.INFO if args.verbose else Severity.WARNING)
    _check_fleet_options(args)
    if args.report:
        check_output_path(args.report, "--report", stdout=True)  # before a plan that may run for minutes
    if args.ray is not None:
        return _run_fleet(args)
    side = (read_engine_or_manifest(args.against, "--against", "an engine is compared with its model by "
                                    "reprobuild compare ENGINE MODEL") if args.against else None)
    data = read_engine_file(args.engine)
    devices, device = None, args.device
    if args.devices is not None:
        backend = engine_outline(data).backend  # before the engine is loaded on the first device listed
        devices = resolve_devices(args.devices, backend)
        device = devices[0] if backend == "cuda" else None
    engine = engine_at_shape(args, Runtime(logger, max_memory=args.max_memory, device=device).deserialize_engine(data))
    if side is not None and side.kind == "manifest":  # before any run
        problem = pair_mismatch(side.engine.sha256, engine.sha256, args.engine) if side.engine else None
        if problem:
            raise UsageError(problem)
        check_record(side.pinned, pinned_from_json(engine.manifest_json), engine.header.manifest_sha256,
                     f"--against {args.against!r}", f"engine {args.engine!r}")
    inputs, label = engine_inputs(args, engine.inputs)
    plan = VerifyPlan(runs=args.runs, contexts=args.contexts, threads=args.threads, streams=args.streams,
                      processes=args.processes, batch_invariance=not args.no_batch_invariance,
                      traced_runs=args.traced_runs)
    plan.validate()
    progress = ProgressBar(plan.total_runs, "verify", enabled=not args.quiet)
    seed = args.seed if args.seed is not None else args.input_default_seed  # also seeds the batch-invariance check
    report = verify(engine, inputs, plan, label, progress, seed, args.max_memory, devices)
    print(f"engine     {args.engine} ({engine.backend.name}, {engine.num_layers} layers, "
          f"sha256 {engine.sha256[:16]}...)")
    print(f"inputs     {label}")
    on_devices = (f", + {len(devices)} device worker(s) on {_device_list(devices, engine.backend.name)}"
                  if devices else "")
    print(f"plan       {plan.runs} runs x {plan.threads} thread(s) x {plan.streams} stream(s) + {plan.contexts} "
          f"fresh context(s), {plan.processes} process(es){on_devices}: {report.total_runs} runs")
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
    shapes_ok = True
    if args.shapes:
        profile = engine.profile_sizes[0] if engine.profile_sizes is not None else args.profile_index
        base = Runtime(logger, max_memory=args.max_memory, device=device).deserialize_engine(data)
        for check in shape_invariance(base, profile, args.shapes, seed):
            shapes_ok = shapes_ok and check.identical
            where = ", ".join(f"{k}={v}" for k, v in sorted(check.sizes.items()))
            rows.append([f"shapes {args.shapes[0][0]}={check.batch}" + (f" ({where})" if where else ""),
                         "identical" if check.identical else "DIFFERENT", check.detail])
    print(table(rows, ["dimension", "verdict", "detail"]))
    _print_devices(report)
    against_ok = against_ok and shapes_ok
    if not report.deterministic and report.locator is None and _locally_reproducible(report):
        report = report.model_copy(update={"locator": locate(engine, inputs)})
    if report.locator is not None:
        print(f"locator    {_locator_line(report.locator)}")
    against = f" (against the manifest: {report.against['tier']})" if report.against else ""
    print(f"tier       {report.tier}{against}")
    return _finish(args, report, against_ok)


def _device_list(devices: list[int], backend: str) -> str:
    return "the cpu" if backend == "cpu" else "GPU " + ", ".join(map(str, devices))


def _locally_reproducible(report: VerifyReport) -> bool:
    """Whether a dimension this process ran failed (the locator re-runs here); a device that differs from the
    others is named by the device table with its first differing layer instead."""
    return any(d.tested and not d.identical for d in report.dimensions if d.name != "cross_device")


def _print_devices(report: VerifyReport) -> None:
    """One row per device worker or Ray task: its GPU model, digest, verdict and why."""
    if not report.devices:
        return
    rows = []
    for v in report.devices:
        verdict = ("not comparable" if v.identical is None else "reference" if v.reference and v.repeatable
                   else "identical" if v.identical and v.repeatable else "DIFFERENT")
        rows.append([v.label, v.hardware, v.digest[:16], verdict, v.detail])
    print(f"devices    {len(report.devices)} {'Ray task(s)' if report.fleet else 'device worker(s)'}, each "
          "compared with the others of its GPU model")
    print(table(rows, ["device", "model", "digest", "verdict", "detail"], indent="  "))
    cross = next(d for d in report.dimensions if d.name == "cross_device")
    if not cross.tested and len({v.hardware for v in report.devices}) > 1:
        print(f"warning    cross_device not tested: {cross.detail}")


def _run_fleet(args: argparse.Namespace) -> int:
    """--ray: the engine runs only in the Ray tasks; this process draws the inputs and compares the digests."""
    data = read_engine_file(args.engine)
    outline = engine_outline(data)
    inputs, label = engine_inputs(args, outline.inputs)
    plan = FleetPlan(address=args.ray, tasks=args.ray_tasks, runs=args.runs, contexts=args.contexts,
                     traced_runs=args.traced_runs, max_memory=args.max_memory)
    report = verify_on_ray(data, inputs, plan, label, outline)
    print(f"engine     {args.engine} ({outline.backend}, {len(outline.layers)} layers, "
          f"sha256 {outline.sha256[:16]}...)")
    print(f"inputs     {label}")
    ray_version = report.fleet.ray if report.fleet else "?"
    print(f"plan       Ray at {args.ray} (Ray {ray_version}): {len(report.devices)} task(s), each {plan.runs} "
          f"runs + {plan.contexts} fresh context(s) + {max(1, plan.traced_runs)} traced run(s): "
          f"{report.total_runs} runs")
    rows = [[d.name, "not tested" if not d.tested else "identical" if d.identical else "DIFFERENT", d.detail]
            for d in report.dimensions]
    rows.append(["batch_invariant", "not tested", report.batch_detail])
    print(table(rows, ["dimension", "verdict", "detail"]))
    _print_devices(report)
    print(f"tier       {report.tier}")
    return _finish(args, report, True)


def _finish(args: argparse.Namespace, report: VerifyReport, against_ok: bool) -> int:
    """The speed, warnings and verdict lines, the --report file, and the exit code."""
    print(f"speed      {report.total_runs} runs in {report.seconds:.2f} s: {report.runs_per_second:.1f} runs/s")
    for nonfinite in report.nonfinite:
        print(f"warning    not finite: {printable(nonfinite.text)}")
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
        write_output(args.report, (report.model_dump_json(indent=2) + "\n").encode())
    if not ok:
        print(f"reprobuild verify: {NotDeterministicError.summary}", file=sys.stderr)
        return NotDeterministicError.exit_code
    if nonfinite_fails:
        print(f"reprobuild verify: --fail-on-nonfinite: {'; '.join(f.text for f in report.nonfinite)}",
              file=sys.stderr)
        return ToleranceError.exit_code
    return 0


"""``reprobuild compare``: an engine's outputs against onnxruntime's, within a tolerance, with error statistics."""

from __future__ import annotations

import argparse
import json
import sys

from reprobuild.cli.common import (
    add_device_option,
    add_engine_input_options,
    add_max_memory_option,
    engine_at_shape,
    engine_inputs,
    parse_fraction,
    parse_tolerance,
    read_engine_file,
)
from reprobuild.cli.parsing import Subcommands
from reprobuild.core.digest import sha256_hex
from reprobuild.core.errors import ModelError, ToleranceError
from reprobuild.core.fileio import check_output_path, document_on_stdout, read_bounded, write_output
from reprobuild.core.logger import Logger, Severity
from reprobuild.core.textformat import table
from reprobuild.engine import Engine, Runtime
from reprobuild.frontend.onnx_parser import MAX_MODEL_BYTES
from reprobuild.verify.tolerance import (
    ERROR_STATS,
    check_model_bindings,
    compare_outputs,
    load_reference_model,
    onnxruntime_outputs,
)


def add_parser(sub: Subcommands) -> None:
    p = sub.add_parser(
        "compare", help="compare an engine's outputs with onnxruntime's, within a tolerance",
        description="Run the engine and onnxruntime (the independent reference) on the same inputs and compare "
                    "every output. With --check-error-stat elemwise (the default) every element must satisfy "
                    "|out - ref| <= atol + rtol * |ref|; with max, mean, median or quantile, that statistic of the "
                    "absolute error must be within atol, or that of the relative error within rtol.",
    )
    p.add_argument("engine", help="the engine file")
    p.add_argument("model", help="the ONNX model the engine was built from")
    add_engine_input_options(p, default_seed=0)
    defaults = ", ".join(f"{k}: {a:g}/{r:g}" for k, (a, r) in TOLERANCES.items())
    p.add_argument("--atol", type=parse_tolerance,
                   help=f"absolute tolerance (default: by the engine's precision, atol/rtol {defaults})")
    p.add_argument("--rtol", type=parse_tolerance,
                   help="relative tolerance (default: by the engine's precision, as --atol)")
    p.add_argument("--check-error-stat", choices=ERROR_STATS, default="elemwise",
                   help="which error statistic must be within tolerance (default: elemwise)")
    p.add_argument("--error-quantile", type=parse_fraction, default=0.99, metavar="Q",
                   help="the quantile for --check-error-stat quantile, and the one reported (default: 0.99)")
    p.add_argument("--report", metavar="FILE",
                   help="write the comparison as JSON to FILE, or to standard output with - (the table then goes "
                        "to stderr)")
    add_max_memory_option(p, "the engine (its weights and the execution context's scratch memory)")
    add_device_option(p)
    p.set_defaults(run=run)


#: Default (atol, rtol) per build precision: TF32 rounds every GEMM input to a 10-bit mantissa, float16 stores
#: every activation with one (and a 5-bit exponent), bfloat16 with a 7-bit mantissa (8 times float16's rounding
#: error), so errors compound over the layers.
TOLERANCES = {"fp32": (1e-5, 1e-5), "tf32": (1e-2, 1e-2), "fp16": (5e-2, 5e-2), "bf16": (2e-1, 2e-1)}


def _precision(engine: Engine) -> str:
    """The precision flag the engine was built with (its embedded manifest's pinned config)."""
    try:
        return str(json.loads(engine.manifest_json)["config"]["precision"])
    except (ValueError, KeyError, TypeError):
        return "fp32"


def _recorded_model_sha256(engine: Engine) -> str | None:
    try:
        value = json.loads(engine.manifest_json)["model"]["sha256"]
    except (ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, str) else None


def run(args: argparse.Namespace) -> int:
    with document_on_stdout(args.report):  # --report -: the JSON alone on stdout
        return _compare(args)


def _compare(args: argparse.Namespace) -> int:
    if args.report:
        check_output_path(args.report, "--report", stdout=True)
    runtime = Runtime(Logger(Severity.WARNING), max_memory=args.max_memory, device=args.device)
    engine = engine_at_shape(args, runtime.deserialize_engine(read_engine_file(args.engine)))
    model_bytes = read_bounded(args.model, MAX_MODEL_BYTES, "model", ModelError)
    model = load_reference_model(model_bytes, f"model {args.model!r}")
    check_model_bindings(model, [b.name for b in engine.inputs], [b.name for b in engine.outputs],
                         f"model {args.model!r}", f"engine {args.engine!r}")
    recorded = _recorded_model_sha256(engine)
    if recorded is not None and recorded != sha256_hex(model_bytes) and not args.quiet:
        print(f"reprobuild compare: warning: {args.model!r} is not the file the engine was built from (sha256 "
              f"{sha256_hex(model_bytes)[:16]}..., the engine records {recorded[:16]}...); comparing anyway, as its "
              "inputs and outputs match", file=sys.stderr)
    precision = _precision(engine)
    atol, rtol = TOLERANCES.get(precision, TOLERANCES["fp32"])
    args.atol = atol if args.atol is None else args.atol
    args.rtol = rtol if args.rtol is None else args.rtol
    inputs, label = engine_inputs(args, engine.inputs)
    outputs = engine.create_execution_context().execute(inputs)
    reference = onnxruntime_outputs(model_bytes, inputs, args.verbose > 0)  # its warnings only with -v
    report = compare_outputs(outputs, reference, args.atol, args.rtol, args.check_error_stat, args.error_quantile)
    q = f"p{args.error_quantile * 100:g}"
    rows = [[r.name, "x".join(map(str, r.shape)), f"{r.max_abs:.3g}", f"{r.mean_abs:.3g}", f"{r.median_abs:.3g}",
             f"{r.quantile_abs:.3g}", f"{r.max_rel:.3g}", f"{r.failing}", "pass" if r.passed else "FAIL"]
            for r in report.outputs]
    print(f"reference  onnxruntime (CPU, graph optimizations off); inputs {label}")
    print(f"tolerance  {args.check_error_stat}: atol {args.atol:g}, rtol {args.rtol:g} (engine precision {precision})")
    print(table(rows, ["output", "shape", "max abs", "mean abs", "median abs", f"{q} abs", "max rel",
                       "outside tol", "verdict"]))
    if args.report:
        write_output(args.report, (report.model_dump_json(indent=2) + "\n").encode())
    if not report.passed:
        print(f"reprobuild compare: {ToleranceError.summary}", file=sys.stderr)
        return ToleranceError.exit_code
    return 0

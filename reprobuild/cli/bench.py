"""``reprobuild bench``: latency and throughput of an engine, as trtexec reports them."""

from __future__ import annotations

import argparse
import json

from reprobuild.bench import BenchReport, Stats, benchmark
from reprobuild.cli.common import (
    add_device_option,
    add_engine_input_options,
    add_max_memory_option,
    engine_at_shape,
    engine_inputs,
    parse_count,
    read_engine_file,
)
from reprobuild.cli.parsing import Subcommands
from reprobuild.core.logger import Logger, Severity
from reprobuild.core.textformat import table
from reprobuild.engine import Runtime


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.0 <= value <= 86400.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 86400 seconds")
    return value


def add_parser(sub: Subcommands) -> None:
    p = sub.add_parser(
        "bench", help="measure an engine's latency and throughput (as trtexec does)",
        description="Run an engine again and again on one set of host inputs and report, as trtexec does: "
                    "throughput, latency (H2D + GPU compute + D2H, from CUDA events), host latency (wall time from "
                    "inputs on the host to outputs on the host), host enqueue time, GPU compute time, and the H2D "
                    "and D2H copies, each as min, mean, median, p90, p95, p99 and max in milliseconds. On the cpu "
                    "backend the engine runs inside enqueue, so its compute row, CPU compute (gpu_compute in "
                    "--json), is the enqueue time and there are no copies. Timings are measurements, not part of "
                    "any build: nothing is written.",
    )
    p.add_argument("engine", help="the engine file")
    add_engine_input_options(p, default_seed=0)
    p.add_argument("--iterations", type=parse_count(1), default=200, metavar="N",
                   help="timed iterations, 1 or more (default: 200); with --duration, at least this many")
    p.add_argument("--duration", type=_seconds, default=0.0, metavar="SECONDS",
                   help="keep running until this many seconds have passed too (default: 0, iterations only)")
    p.add_argument("--warmup", type=parse_count(0), default=20, metavar="N",
                   help="untimed runs first (default: 20); the first run captures the CUDA graph, so with 0 the "
                        "first timed iteration includes the capture")
    p.add_argument("--graph", action=argparse.BooleanOptionalAction, default=None,
                   help="run as a CUDA graph (--graph) or launch by launch (--no-graph); default: as the engine "
                        "was built (a graph when it can)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON document on stdout")
    add_max_memory_option(p, "the engine (its weights and the execution context's scratch memory)")
    add_device_option(p)
    p.set_defaults(run=run)


def _row(label: str, stats: Stats | None) -> list[str]:
    if stats is None:
        return [label] + ["-"] * 7
    return [label] + [f"{v:.4f}" for v in (stats.min, stats.mean, stats.median, stats.p90, stats.p95, stats.p99,
                                           stats.max)]


def render(report: BenchReport, engine_path: str) -> str:
    lines = [f"engine       {engine_path} ({report.engine_sha256[:16]})",
             f"device       {report.backend}: {report.device}",
             f"execution    {'CUDA graph' if report.cuda_graph else 'launch by launch'}; {report.warmup_runs} "
             f"warm-up run(s), {report.iterations} timed iterations in {report.seconds:.3f} s",
             f"throughput   {report.throughput_qps:.2f} qps",
             ""]
    rows = [_row("latency", report.latency), _row("host latency", report.host_latency),
            _row("enqueue (host)", report.enqueue)]
    if report.backend == "cuda":
        rows += [_row("GPU compute", report.gpu_compute), _row("H2D", report.h2d), _row("D2H", report.d2h)]
    else:  # the engine runs inside enqueue, on the host: no GPU, no copies
        rows.append(_row("CPU compute", report.gpu_compute))
    lines.append(table(rows, ["ms", "min", "mean", "median", "p90", "p95", "p99", "max"]))
    if report.device_memory:
        free, total = report.device_memory["free_bytes"], report.device_memory["total_bytes"]
        lines.append(f"\ndevice memory (cudaMemGetInfo): {free} bytes free of {total}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    logger = Logger(Severity.INFO if args.verbose else Severity.WARNING)
    runtime = Runtime(logger, max_memory=args.max_memory, device=args.device)
    engine = engine_at_shape(args, runtime.deserialize_engine(read_engine_file(args.engine)))
    inputs, source = engine_inputs(args, engine.inputs)
    report = benchmark(engine, inputs, iterations=args.iterations, duration=args.duration,
                       warmup=args.warmup, cuda_graph=args.graph)
    if args.json:
        print(json.dumps({"engine": args.engine, "inputs": source, **report.to_json()}, sort_keys=True, indent=2))
    else:
        print(render(report, args.engine))
        print(f"inputs       {source}")
    return 0

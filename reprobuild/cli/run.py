"""``reprobuild run``: run an engine on inputs from .npy files (or seeded random ones) and save the outputs."""

from __future__ import annotations

import argparse
import io
import os
import sys
from typing import Any

import numpy as np

from reprobuild.cli.common import (
    DeprecatedAlias,
    add_device_option,
    add_engine_input_options,
    add_max_memory_option,
    engine_at_shape,
    engine_inputs,
    json_float,
    parse_seed,
    print_json,
    read_engine_file,
    safe_filename,
)
from reprobuild.cli.parsing import Subcommands
from reprobuild.core.digest import TENSOR_DIGEST_LABEL, array_digest
from reprobuild.core.errors import UsageError
from reprobuild.core.fileio import atomic_write, check_output_directory, check_output_path, make_output_directory
from reprobuild.core.logger import Logger, Severity
from reprobuild.core.textformat import printable, table
from reprobuild.engine import Runtime
from reprobuild.verify.run import nonfinite_outputs

#: ``run --random-inputs SEED``, the old spelling of ``--seed SEED``, goes in this version.
RANDOM_INPUTS_REMOVED_IN = "0.2.0"


def add_parser(sub: Subcommands) -> None:
    p = sub.add_parser(
        "run", help="run an engine on .npy inputs and save its outputs",
        description="Run an engine once, on inputs given as in verify, compare and bench: --input NAME=FILE.npy, "
                    "--inputs DIR (NAME.npy per input), and --seed SEED for any input not given (the values verify "
                    "and the golden record draw from that seed). Prints each output's shape, dtype, sha256 over "
                    "(dtype, shape, bytes) (the digest the manifest's golden record and inspect show) and "
                    "range (--json: one JSON document instead); --output-dir saves each as NAME.npy.",
    )
    p.add_argument("engine", help="the engine file")
    inputs = add_engine_input_options(p, default_seed=None)
    inputs.add_argument("--random-inputs", action=DeprecatedAlias, dest="seed", type=parse_seed, metavar="SEED",
                        replacement="--seed SEED", remove_in=RANDOM_INPUTS_REMOVED_IN,
                        help=f"deprecated spelling of --seed, removed in reprobuild {RANDOM_INPUTS_REMOVED_IN}")
    p.add_argument("--output-dir", metavar="DIR",
                   help="where to save NAME.npy per output, created if missing (its parent must exist); each "
                        "NAME.npy there must be a regular file or new (default: don't save)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document on stdout instead of the table: per output its shape, dtype, "
                        "sha256 (over dtype, shape and bytes, as in the manifest), min/max/mean and non-finite "
                        "counts, per input its source and sha256, the files written")
    add_max_memory_option(p, "the engine (its weights and the execution context's scratch memory)")
    add_device_option(p)
    p.set_defaults(run=run)


def output_summary(value: np.ndarray) -> dict[str, Any]:
    """Shape, dtype, sha256 over (dtype, shape, bytes) (``array_digest``: the digest the manifest's golden record
    holds), min/max/mean (null when empty; NaN and infinities as strings) and how many elements are NaN or
    infinite."""
    stats = value.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf in the mean: reported as "nan"
        figures = ({"min": json_float(stats.min()), "max": json_float(stats.max()), "mean": json_float(stats.mean())}
                   if value.size else {"min": None, "max": None, "mean": None})
    return {"shape": list(value.shape), "dtype": str(value.dtype), "sha256": array_digest(value), **figures,
            "nan": int(np.isnan(stats).sum()), "posinf": int(np.isposinf(stats).sum()),
            "neginf": int(np.isneginf(stats).sum())}


def _figure(value: float | str | None) -> str:
    return "-" if value is None else value if isinstance(value, str) else f"{value:.6g}"


def _output_files(names: list[str], directory: str) -> dict[str, str]:
    """Each output's NAME.npy in ``directory``, each checked as an output path where the directory exists (before
    the engine runs)."""
    files = {name: os.path.join(directory, safe_filename(name) + ".npy") for name in names}
    if len(set(files.values())) != len(files):
        raise UsageError("two outputs map to the same file name; rename them in the model")
    if os.path.isdir(directory):
        for path in files.values():
            check_output_path(path, "--output-dir: the output file")
    return files


def _save(outputs: dict[str, np.ndarray], directory: str, files: dict[str, str]) -> None:
    make_output_directory(directory)
    for name, path in files.items():
        buf = io.BytesIO()
        np.save(buf, outputs[name], allow_pickle=False)
        atomic_write(path, buf.getvalue())


def run(args: argparse.Namespace) -> int:
    logger = Logger(Severity.INFO if args.verbose else Severity.WARNING)
    if args.output_dir:
        check_output_directory(args.output_dir, "--output-dir")
    runtime = Runtime(logger, max_memory=args.max_memory, device=args.device)
    engine = engine_at_shape(args, runtime.deserialize_engine(read_engine_file(args.engine)))
    inputs, label = engine_inputs(args, engine.inputs)
    files = _output_files([b.name for b in engine.outputs], args.output_dir) if args.output_dir else {}
    outputs = engine.create_execution_context().execute(inputs)
    summaries = {name: output_summary(value) for name, value in outputs.items()}
    for found in nonfinite_outputs(outputs):
        print(f"reprobuild run: warning: not finite: {printable(found.text)}", file=sys.stderr)
    if args.output_dir:
        _save(outputs, args.output_dir, files)
    if args.json:
        print_json({
            "engine": {"path": args.engine, "sha256": engine.sha256},
            "inputs": {name: {"shape": list(v.shape), "dtype": str(v.dtype), "sha256": array_digest(v)}
                       for name, v in inputs.items()},
            "inputs_from": label,
            "outputs": summaries,
            "files": files,
        })
        return 0
    rows = [[name, "x".join(map(str, s["shape"])), s["dtype"], s["sha256"][:16], _figure(s["min"]),
             _figure(s["max"]), _figure(s["mean"])] for name, s in summaries.items()]
    print(f"inputs  {label}")
    print(table(rows, ["output", "shape", "dtype", TENSOR_DIGEST_LABEL, "min", "max", "mean"]))
    for path in files.values():
        print(f"wrote {path}")
    return 0

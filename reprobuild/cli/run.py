"""``reprobuild run``: run an engine on inputs from .npy files (or seeded random ones) and save the outputs."""

from __future__ import annotations

import argparse
import io
import os
import sys

import numpy as np

from reprobuild.cli.common import (
    Subcommands,
    add_max_memory_option,
    parse_pair,
    parse_seed,
    read_engine_file,
    read_npy,
    safe_filename,
)
from reprobuild.digest import sha256_hex
from reprobuild.engine import Runtime
from reprobuild.engine.golden import golden_inputs
from reprobuild.errors import InputError, UsageError
from reprobuild.fileio import atomic_write
from reprobuild.logger import Logger, Severity
from reprobuild.textformat import table
from reprobuild.verify import nonfinite_outputs


def add_parser(sub: Subcommands) -> None:
    p = sub.add_parser(
        "run", help="run an engine on .npy inputs and save its outputs",
        description="Run an engine once. Inputs come from --input NAME=FILE.npy; any input not given is drawn "
                    "from the seeded generator that verify and the golden record use when --random-inputs SEED is "
                    "set (standard normal floats, zeros for integers; a pinned input gets its pinned value). "
                    "Outputs are saved as NAME.npy under --output-dir, and their sha256 digests printed.",
    )
    p.add_argument("engine", help="the engine file")
    p.add_argument("--input", action="append", type=parse_pair("NAME=FILE.npy"), default=[],
                   metavar="NAME=FILE.npy",
                   help="an input array (repeat for each input)")
    p.add_argument("--random-inputs", type=parse_seed, metavar="SEED",
                   help="fill inputs not given with --input with values drawn from SEED (the same as verify's "
                        "--seed and the golden record's seed)")
    p.add_argument("--output-dir", metavar="DIR", help="where to save NAME.npy per output (default: don't save)")
    add_max_memory_option(p, "the engine (its weights and the execution context's scratch memory)")
    p.set_defaults(run=run)


def _load_npy(name: str, path: str) -> np.ndarray:
    return np.asarray(read_npy(path, f"input {name!r}:", InputError))


def run(args: argparse.Namespace) -> int:
    logger = Logger(Severity.INFO if args.verbose else Severity.WARNING)
    engine = Runtime(logger, max_memory=args.max_memory).deserialize_engine(read_engine_file(args.engine))
    inputs = {name: _load_npy(name, path) for name, path in args.input}
    if args.random_inputs is not None:  # the inputs verify and the golden record draw from the same seed
        drawn = golden_inputs(engine.inputs, args.random_inputs)
        inputs = {**{k: v for k, v in drawn.items() if k not in inputs}, **inputs}
    outputs = engine.create_execution_context().execute(inputs)
    rows = []
    for name, value in outputs.items():
        stats = value.astype(np.float64) if value.size else np.zeros(1)
        with np.errstate(invalid="ignore", over="ignore"):  # inf - inf in the mean: a nan in the table is enough
            rows.append([name, "x".join(map(str, value.shape)), str(value.dtype), sha256_hex(value.tobytes())[:16],
                         f"{stats.min():.6g}", f"{stats.max():.6g}", f"{stats.mean():.6g}"])
    print(table(rows, ["output", "shape", "dtype", "sha256", "min", "max", "mean"]))
    for found in nonfinite_outputs(outputs):
        print(f"reprobuild run: warning: not finite: {found.text}", file=sys.stderr)
    if args.output_dir:
        files = {name: os.path.join(args.output_dir, safe_filename(name) + ".npy") for name in outputs}
        if len(set(files.values())) != len(files):
            raise UsageError("two outputs map to the same file name; rename them in the model")
        for name, path in files.items():
            buf = io.BytesIO()
            np.save(buf, outputs[name], allow_pickle=False)
            atomic_write(path, buf.getvalue())
            print(f"wrote {path}")
    return 0

"""What a fuzz case does with the file it made: load it and use it the way the toolkit's commands do, through the
API (``Runtime``, ``ExecutionContext``, ``benchmark``, ``verify``, ``compare``, ``locate``, replay builds,
``check_against``, ``diff``) and, for a share of the cases, through the command line in this process
(``reprobuild.cli.main.main``), whose exit code is the verdict there.

Each function returns when everything it asked for ran (the case is accepted) and raises otherwise: a
``ReprobuildError`` (or ``CliExit``) is a typed refusal, ``Silent`` an oracle's verdict, anything else a failure.
"""

from __future__ import annotations

import io
import os
import random
import re
from collections.abc import Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reprobuild.cli.main import main
from reprobuild.core.logger import Logger, Severity
from reprobuild.engine.runtime import Engine, Runtime
from tests.fuzz.outcome import REPO, CliExit, CliInternalError, Silent
from tests.fuzz.seeds import Seed

QUIET = Logger(Severity.INTERNAL_ERROR)
#: The memory cap of most runs (the others use the default: the host's memory), and the CLI's spelling of it.
ENGINE_CAP = 256 * 2**20
CLI_CAP = "256M"
#: Inputs larger than this are not drawn: the engine is loaded and a context made, nothing run.
MAX_INPUT_BYTES = 64 * 2**20
_INTERNAL = re.compile(r": internal error: ([\w.]+): (.*)")
_FRAME = re.compile(r'File "([^"]+)", line \d+, in (\S+)')


@dataclass
class Context:
    """What the cases of one worker share: the seeds, a scratch directory, the seeds' files on disk, and each
    seed's engine loaded once (for ``verify --against`` and ``diff``)."""

    seeds: tuple[Seed, ...]
    scratch: str
    #: Share of the cases that go through the command line instead of the API.
    cli_share: float = 0.06
    _files: dict[tuple[str, str], str] = field(default_factory=dict)
    _engines: dict[str, Engine] = field(default_factory=dict)

    def seed_file(self, seed: Seed, kind: str) -> str:
        """The seed's ``model``, ``engine`` or ``manifest`` as a file (written once)."""
        key = (seed.name, kind)
        if key not in self._files:
            suffix = {"model": ".onnx", "engine": ".engine", "manifest": ".manifest.json"}[kind]
            path = os.path.join(self.scratch, "seeds", seed.name + suffix)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(getattr(seed, kind))
            self._files[key] = path
        return self._files[key]

    def engine(self, seed: Seed) -> Engine:
        if seed.name not in self._engines:
            self._engines[seed.name] = Runtime(QUIET).deserialize_engine(seed.engine)
        return self._engines[seed.name]

    def case_file(self, name: str, data: bytes) -> str:
        """A file for this case (the case directory is emptied before each case)."""
        path = os.path.join(self.scratch, "case", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return path


def cli(args: Sequence[str]) -> int:
    """``reprobuild ARGS`` in this process (with ``--debug``, so that an internal error's traceback says where it
    arose); its exit code, 0 (or diff's 1: "they differ"). A documented nonzero exit raises ``CliExit``, an internal
    error ``CliInternalError``, a terminal escape written raw ``Silent``."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main([args[0], "--debug", *args[1:]])
        except SystemExit as exc:  # argparse: a usage error
            code = exc.code if isinstance(exc.code, int) else 2
    stdout, stderr = out.getvalue(), err.getvalue()
    internal = _INTERNAL.search(stderr)
    if internal is not None or (code == 1 and args[0] != "diff"):  # diff(1) exits 1 for "they differ"
        frames = [f"{os.path.relpath(p, REPO)}:{fn}" for p, fn in _FRAME.findall(stderr)
                  if not os.path.relpath(p, REPO).startswith(("..", "tests"))]
        kind, message = internal.groups() if internal is not None else ("exit 1", stderr[-500:])
        raise CliInternalError(kind, f"reprobuild {args[0]}: {message}", frames[-1] if frames else "")
    if "\x1b" in stdout or "\x1b" in stderr:
        raise Silent(f"reprobuild {args[0]} wrote a raw terminal escape (ESC) to the terminal; names from a file "
                     "must be printed escaped")
    if code not in (0, 1):
        said = stderr.rfind(f"reprobuild {args[0]}: error: ")  # the message, after --debug's traceback
        raise CliExit(code, stderr[said:] if said >= 0 else stderr)
    return code


def random_inputs(rng: random.Random, bindings: Sequence[Any]) -> dict[str, np.ndarray] | None:
    """An array per run-time input, of its shape and dtype (floats normal, integers small and sometimes
    negative, bools random); None when they would take more than ``MAX_INPUT_BYTES``."""
    gen = np.random.default_rng(rng.getrandbits(64))
    out = {}
    total = 0
    for b in bindings:
        if b.value is not None:
            continue
        dtype = np.dtype(b.dtype) if b.dtype in np.sctypeDict else None
        size = int(np.prod(b.shape, dtype=object))
        total += size * (dtype.itemsize if dtype is not None else 4)
        if total > MAX_INPUT_BYTES:
            return None
        if dtype is None:  # a dtype NumPy names otherwise (bfloat16, float8): through float32
            from reprobuild.core.dtypes import np_dtype

            out[b.name] = gen.standard_normal(b.shape).astype(np.float32).astype(np_dtype(b.dtype))
        elif dtype.kind == "f":
            out[b.name] = gen.standard_normal(b.shape).astype(dtype)
        elif dtype.kind in "iu":
            out[b.name] = gen.integers(-3 if dtype.kind == "i" else 0, 10, size=b.shape).astype(dtype)
        elif dtype.kind == "b":
            out[b.name] = gen.integers(0, 2, size=b.shape).astype(bool)
        else:
            out[b.name] = np.zeros(b.shape, dtype)
    return out


def run_engine(rng: random.Random, data: bytes, ctx: Context, seed: Seed | None) -> None:
    """Load engine bytes and run them: a context on random inputs, then sometimes bench, verify, compare (with
    the seed's model as the reference), a traced run and the divergence locator, or enqueue; or (``cli_share``)
    one of inspect, run, bench, verify and compare on the command line."""
    if rng.random() < ctx.cli_share:
        return engine_cli(rng, data, ctx, seed)
    engine = Runtime(QUIET, max_memory=None if rng.random() < 0.25 else ENGINE_CAP).deserialize_engine(data)
    context = engine.create_execution_context()
    inputs = random_inputs(rng, engine.inputs)
    if inputs is None:
        return
    context.execute(inputs)
    path = rng.random()
    if path < 0.04:
        from reprobuild.bench import benchmark

        benchmark(engine, inputs, iterations=2, warmup=0)
    elif path < 0.08:
        from reprobuild.verify.records import VerifyPlan
        from reprobuild.verify.run import verify

        verify(engine, inputs, VerifyPlan(runs=2, contexts=1, traced_runs=1, batch_invariance=rng.random() < 0.5))
    elif path < 0.12 and seed is not None:
        from reprobuild.verify.tolerance import (
            check_model_bindings,
            compare_outputs,
            load_reference_model,
            onnxruntime_outputs,
        )

        model = load_reference_model(seed.model)
        check_model_bindings(model, [b.name for b in engine.inputs], [b.name for b in engine.outputs])
        compare_outputs(context.execute(inputs), onnxruntime_outputs(seed.model, inputs), 1e-5, 1e-5)
    elif path < 0.16:
        from reprobuild.verify.locate import locate

        context.execute_traced(inputs)
        locate(engine, inputs, attempts=2)
    elif path < 0.2:
        context.to_host(context.enqueue(inputs))


def engine_cli(rng: random.Random, data: bytes, ctx: Context, seed: Seed | None) -> None:
    path = ctx.case_file("fuzzed.engine", data)
    command = rng.randrange(5)
    if command == 0:
        cli(["inspect", path, *(["--json"] if rng.random() < 0.3 else [])])
    elif command == 1:
        cli(["run", path, "--seed", str(rng.randrange(3)), "--max-memory", CLI_CAP])
    elif command == 2:
        cli(["bench", path, "--iterations", "2", "--warmup", "0", "--max-memory", CLI_CAP])
    elif command == 3:
        cli(["verify", path, "--runs", "2", "--contexts", "1", "--processes", "1", "--traced-runs", "1",
             "--no-batch-invariance", "--max-memory", CLI_CAP])
    elif seed is not None:
        cli(["compare", path, ctx.seed_file(seed, "model"), "--seed", "0", "--max-memory", CLI_CAP])
    else:
        cli(["inspect", path])

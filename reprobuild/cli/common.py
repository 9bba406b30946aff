"""Helpers shared by the subcommands: option parsing, engine loading, and output formatting."""

from __future__ import annotations

import argparse
import os
import re
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from reprobuild.errors import ReprobuildError, UsageError
from reprobuild.fileio import read_bounded

MAX_ENGINE_BYTES = 64 * 1024**3
_SIZE = re.compile(r"^(\d+)\s*([kmgt]?i?b?)?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_bytes(text: str) -> int:
    """'1073741824', '512M', '1GiB', '4g' -> bytes (binary units)."""
    match = _SIZE.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; use bytes or a suffix: 512M, 1G, 2GiB")
    unit = (match.group(2) or "").lower().rstrip("b").rstrip("i")
    return int(match.group(1)) * _UNITS[unit]


def parse_seed(text: str) -> int:
    """An argparse type for seeds (``--seed``, ``run --random-inputs``): an integer in [0, 2**64), as the builder's
    ``check_seed`` says; anything else ('--seed -1') is an argparse error, exit code 2."""
    from reprobuild.builder.config import check_seed

    try:
        value = int(text.strip(), 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a seed; give an integer of 0 or more, such as 0") from None
    try:
        return check_seed(value, "a seed")
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_memory_size(text: str) -> int:
    """An argparse type for ``--max-memory``: a size as ``parse_bytes`` reads it, more than 0 bytes."""
    value = parse_bytes(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is no memory at all; give a size such as 512M or 8G")
    return value


def parse_fraction(text: str) -> float:
    """A number in [0, 1] (a quantile)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number between 0 and 1") from None
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def parse_tolerance(text: str) -> float:
    """A tolerance: a finite number, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give a tolerance such as 1e-5") from None
    if not 0.0 <= value < float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} is not a tolerance: give a finite number, 0 or more")
    return value


def parse_shape_option(text: str) -> tuple[str, tuple[int, ...]]:
    """'input=1x3x224x224' -> ('input', (1, 3, 224, 224)). The name may itself contain '='."""
    name, sep, dims = text.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.lower().split("x"))
    except ValueError:
        shape = ()
    if not sep or not name or not shape:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=DxDx...; for example data=1x3x224x224")
    return name, shape


def parse_value_option(text: str) -> tuple[str, Any]:
    """'shape=1,3,224' -> ('shape', array([1, 3, 224])); 'k=5' -> a one-element array; 'x=values.npy' -> the
    array in that file (never unpickled). The model's declared dtype is applied later, exactly or not at all."""
    import numpy as np

    name, sep, value = text.rpartition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=V1,V2,... or NAME=FILE.npy")
    if value.endswith(".npy"):
        try:
            return name, read_npy(value, f"--input-value {name}:", UsageError)
        except ReprobuildError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    try:
        numbers = [float(v) if any(c in v.lower() for c in ".en") else int(v) for v in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--input-value {name}: {value!r} is not a comma-separated list of "
                                         "numbers (for example 1,3,224,224) nor a .npy file") from None
    return name, np.array(numbers)


def parse_pair(form: str) -> Callable[[str], tuple[str, str]]:
    """An argparse type for KEY=VALUE options; ``form`` (e.g. ``NAME=FILE.npy``) is what the error shows."""

    def parse(text: str) -> tuple[str, str]:
        key, sep, value = text.rpartition("=")
        if not sep or not key or not value:
            raise argparse.ArgumentTypeError(f"{text!r} is not {form}")
        return key, value

    return parse


MAX_ARRAY_BYTES = 64 * 1024**3


def read_npy(path: str, what: str, error: type[ReprobuildError]) -> Any:
    """The array in a .npy file, read through ``read_bounded`` (a FIFO or ``/dev/zero`` is refused, the size is
    capped) and never unpickled; a file that is not a plain .npy array is an ``error`` that says so (numpy's own
    message for an object array suggests unpickling it, which reprobuild never does)."""
    import io

    import numpy as np

    data = read_bounded(path, MAX_ARRAY_BYTES, what)
    try:
        return np.asarray(np.load(io.BytesIO(data), allow_pickle=False))
    except ValueError as exc:
        why = ("it holds Python objects (an object array), which reprobuild never loads"
               if "pickle" in str(exc) else str(exc))
        raise error(f"{what} {path!r} is not a plain .npy array of numbers: {why}. Save one with "
                    "numpy.save(path, array) from a numeric array") from None


def read_engine_file(path: str) -> bytes:
    return read_bounded(path, MAX_ENGINE_BYTES, "engine")


def default_engine_path(model: str) -> str:
    return os.path.splitext(os.path.basename(model))[0] + ".engine"


def default_manifest_path(engine: str) -> str:
    stem = engine[:-len(".engine")] if engine.endswith(".engine") else engine
    return stem + ".manifest.json"


def safe_filename(name: str) -> str:
    """A tensor name as a file name: anything but letters, digits, '.', '_' and '-' becomes '_'."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).strip(".")
    if not cleaned:
        raise UsageError(f"tensor name {name!r} cannot be turned into a file name")
    return cleaned


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{n} B"
        value /= 1024
    return f"{n} B"


class Subcommands:
    """Adds the common options and the exit-code epilog to every subcommand parser."""

    def __init__(self, sub: argparse._SubParsersAction, common: argparse.ArgumentParser, epilog: str) -> None:
        self.sub, self.common, self.epilog = sub, common, epilog

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = self.sub.add_parser(
            name, parents=[self.common], epilog=self.epilog, formatter_class=argparse.RawDescriptionHelpFormatter,
            allow_abbrev=False, **kwargs)  # no prefix matching: --input must never silently become --inputs
        return parser


class ProgressBar:
    """A progress bar on stderr: one updating line on a terminal, a line every tenth of the way otherwise."""

    def __init__(self, total: int, label: str, enabled: bool = True) -> None:
        self.total, self.label, self.enabled = max(total, 1), label, enabled
        self.done, self._shown, self.tty = 0, -1, stderr_is_tty()
        self._lock = threading.Lock()

    def __call__(self, n: int) -> None:
        if not self.enabled:
            return
        with self._lock:
            self.done = min(self.total, self.done + n)
            tenth = self.done * 10 // self.total
            if self.tty:
                width = 30
                filled = width * self.done // self.total
                print(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}",
                      end="", file=sys.stderr, flush=True)
                if self.done == self.total:
                    print(file=sys.stderr, flush=True)
            elif tenth != self._shown:
                self._shown = tenth
                print(f"{self.label}: {self.done}/{self.total}", file=sys.stderr, flush=True)


def add_max_memory_option(parser: argparse.ArgumentParser, what: str) -> None:
    """--max-memory SIZE: the memory cap of a build (``BuilderConfig.max_memory``) or of loading and running an
    engine (``Runtime(max_memory=...)``); over it is a ResourceError, exit code 13, before anything is allocated."""
    parser.add_argument("--max-memory", type=parse_memory_size, metavar="SIZE",
                        help=f"the most memory {what} may take, e.g. 512M or 8G; more is refused (exit code 13) "
                             "before anything is allocated (default: the device's memory on cuda, the host's on cpu)")


def add_input_options(parser: argparse.ArgumentParser) -> None:
    """--seed or --inputs: where the inputs of verify and compare come from."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--seed", type=parse_seed, default=0,
                        help="seed of the standard-normal inputs, 0 or more (default: 0)")
    source.add_argument("--inputs", metavar="DIR", help="read NAME.npy per input from DIR instead")


def inputs_from_options(args: argparse.Namespace, bindings: Sequence[Any]) -> tuple[dict[str, Any], str]:
    """The inputs ``add_input_options`` asked for, and a phrase saying where they came from."""
    from reprobuild.engine.golden import golden_inputs

    if args.inputs:
        return load_inputs(args.inputs, bindings), f"from {args.inputs}"
    return golden_inputs(bindings, args.seed), f"seeded standard normal (seed {args.seed})"


def load_inputs(directory: str, bindings: Sequence[Any]) -> dict[str, Any]:
    """NAME.npy for each input binding (the name made file-safe), as ``reprobuild run --output-dir`` writes."""

    from reprobuild.errors import InputError

    inputs = {}
    for b in bindings:
        path = os.path.join(directory, safe_filename(b.name) + ".npy")
        if not os.path.exists(path):
            raise InputError(f"input {b.name!r}: {path!r} does not exist; --inputs expects one NAME.npy per "
                             f"input: {', '.join(safe_filename(x.name) + '.npy' for x in bindings)}")
        inputs[b.name] = read_npy(path, f"input {b.name!r}:", InputError)
    return inputs

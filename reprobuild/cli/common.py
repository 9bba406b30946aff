"""Helpers shared by the subcommands: option parsing, engine loading, and output formatting."""

from __future__ import annotations

import argparse
import os
import re
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from reprobuild.errors import UsageError
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
            return name, np.load(value, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise argparse.ArgumentTypeError(f"--input-value {name}: cannot read {value!r} as a plain .npy "
                                             f"array: {exc}") from None
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
            **kwargs)
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


def add_input_options(parser: argparse.ArgumentParser) -> None:
    """--seed or --inputs: where the inputs of verify and compare come from."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--seed", type=int, default=0, help="seed of the standard-normal inputs (default: 0)")
    source.add_argument("--inputs", metavar="DIR", help="read NAME.npy per input from DIR instead")


def inputs_from_options(args: argparse.Namespace, bindings: Sequence[Any]) -> tuple[dict[str, Any], str]:
    """The inputs ``add_input_options`` asked for, and a phrase saying where they came from."""
    from reprobuild.engine.golden import golden_inputs

    if args.inputs:
        return load_inputs(args.inputs, bindings), f"from {args.inputs}"
    return golden_inputs(bindings, args.seed), f"seeded standard normal (seed {args.seed})"


def load_inputs(directory: str, bindings: Sequence[Any]) -> dict[str, Any]:
    """NAME.npy for each input binding (the name made file-safe), as ``reprobuild run --output-dir`` writes."""
    import numpy as np

    from reprobuild.errors import InputError

    inputs = {}
    for b in bindings:
        path = os.path.join(directory, safe_filename(b.name) + ".npy")
        try:
            inputs[b.name] = np.load(path, allow_pickle=False)
        except OSError as exc:
            raise InputError(f"input {b.name!r}: cannot read {path!r} ({exc.strerror or exc}); --inputs expects "
                             f"one NAME.npy per input: {', '.join(safe_filename(x.name) + '.npy' for x in bindings)}"
                             ) from None
        except ValueError as exc:
            raise InputError(f"input {b.name!r}: {path!r} is not a plain .npy array ({exc})") from None
    return inputs

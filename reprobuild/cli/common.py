"""Helpers shared by the subcommands: option parsing, engine loading, and output formatting."""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import sys
import threading
import tokenize
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from reprobuild.builder.config import check_seed
from reprobuild.core.dtypes import FLOATS, NARROW, dtype_name, itemsize, np_dtype
from reprobuild.core.errors import InputError, ReprobuildError, UsageError
from reprobuild.core.fileio import read_bounded
from reprobuild.core.textformat import printable
from reprobuild.diffing import Side, load_side
from reprobuild.engine.advice import shape_advice
from reprobuild.engine.format import MAGIC
from reprobuild.engine.golden import golden_inputs

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


MAX_COUNT = 10_000_000  #: the most runs, iterations or samples a count option takes


def parse_count(minimum: int) -> Callable[[str], int]:
    """An argparse type for a count (runs, iterations, samples) from ``minimum`` to ``MAX_COUNT``: an error names
    the option and the range (exit code 2), before any work."""

    def parse(text: str) -> int:
        try:
            value = int(text.strip(), 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not minimum <= value <= MAX_COUNT:
            raise argparse.ArgumentTypeError(f"{text} is not a count from {minimum} to {MAX_COUNT}")
        return value

    return parse


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


def parse_sizes_option(text: str) -> tuple[str, tuple[int, ...]]:
    """'batch=1,3,8,32' -> ('batch', (1, 3, 8, 32)): a dynamic dimension and sizes to run it at."""
    name, sep, sizes = text.rpartition("=")
    try:
        values = tuple(int(v) for v in sizes.split(","))
    except ValueError:
        values = ()
    if not sep or not name or not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r} is not DIM=S1,S2,... with positive sizes; for example "
                                         "batch=1,3,8,32")
    return name, values


def parse_profile_option(text: str) -> tuple[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """'input_ids=1x16:8x128:32x512' -> ('input_ids', ((1, 16), (8, 128), (32, 512))): min, opt and max."""
    name, sep, shapes = text.rpartition("=")
    parts = shapes.split(":")
    try:
        triple = tuple(tuple(int(d) for d in part.lower().split("x")) for part in parts)
    except ValueError:
        triple = ()
    if not sep or not name or len(triple) != 3 or not all(triple):
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=MIN:OPT:MAX with each shape DxDx...; for example "
                                         "input_ids=1x16:8x128:32x512")
    return name, triple


#: What ``--profile-set`` appends between two profiles' ``--profile`` options.
PROFILE_SET = ("", ((), (), ()))


def profiles_from_options(options: Sequence[Any]) -> list[Any]:
    """``--profile`` options in order, a new optimization profile after each ``--profile-set``."""
    from reprobuild.ir import OptimizationProfile

    groups: list[list[Any]] = [[]]
    for item in options:
        if item == PROFILE_SET:
            groups.append([])
        else:
            groups[-1].append(item)
    if options and not all(groups):
        raise UsageError("--profile-set separates two profiles: each profile needs at least one --profile "
                         "NAME=MIN:OPT:MAX (before the first --profile-set, between two, and after the last)")
    profiles = []
    for index, group in enumerate(groups if options else []):
        profile = OptimizationProfile()
        for name, (low, opt, high) in group:
            if name in profile.inputs:
                raise UsageError(f"--profile {name}=... is given twice in profile {index}")
            profile.set_shape(name, low, opt, high)
        profiles.append(profile)
    return profiles


def parse_value_option(text: str) -> tuple[str, Any]:
    """'shape=1,3,224' -> ('shape', array([1, 3, 224])); 'k=5' -> a one-element array; 'x=values.npy' -> the
    array in that file (never unpickled). The model's declared dtype is applied later, exactly or not at all."""
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
NPY_MAGIC = b"\x93NUMPY"
#: Room for a .npy file's magic and header: numpy writes at most a few hundred bytes, and reads at most 10,000.
_NPY_HEADER_ROOM = 16 * 1024


class _TooLarge(ReprobuildError):
    """A .npy file larger than the array its binding holds (``read_bounded``'s ``too_big``)."""


def read_npy(path: str, what: str, error: type[ReprobuildError], binding: Any = None) -> np.ndarray:
    """The array in a .npy file, read through ``read_bounded`` (a FIFO or ``/dev/zero`` is refused, the size is
    capped) and never unpickled. Its header is read and checked before anything is allocated for it: a plain
    (not object, not structured) dtype, data of exactly the size shape and dtype give, and, for a ``binding``
    (an engine input: ``name``, ``shape``, ``dtype``), that binding's shape and dtype; the file may be at most
    what that array takes. The array is a read-only view over the file's bytes (a copy for a Fortran-order or
    byte-swapped file). Any problem is an ``error`` that says what was expected (numpy's own message for an
    object array suggests unpickling it, which reprobuild never does)."""
    limit = MAX_ARRAY_BYTES if binding is None else _binding_nbytes(binding) + _NPY_HEADER_ROOM
    try:
        data = read_bounded(path, limit, what, error if binding is None else _TooLarge)
    except _TooLarge:
        raise error(f"{what} {path!r} is larger than an array of shape {list(binding.shape)} {binding.dtype}, "
                    f"which the engine takes: {_expect(binding)}") from None
    if not data.startswith(NPY_MAGIC):  # else numpy takes any other file for a pickle, and says so
        raise error(f"{what} {path!r} is not a .npy file: a .npy file starts with {NPY_MAGIC!r}, this one with "
                    f"{data[:8]!r} (a text or .npz file?). Save the array with numpy.save(path, array)")
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"format version {version[0]}.{version[1]}, which numpy writes only for structured "
                             "dtypes with non-Latin-1 field names; reprobuild reads versions 1.0 and 2.0")
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran_order, dtype = read_header(stream)
    except (ValueError, TypeError, SyntaxError, tokenize.TokenError) as exc:
        # numpy parses the header with ast.literal_eval, which raises TypeError for an unhashable key
        # ({[1]: 2}), and retries a header it cannot parse through tokenize, which raises TokenError for an
        # unclosed bracket (a header length that cuts the header short)
        why = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc.args[0] if exc.args else exc}"
        raise error(f"{what} {path!r} has no valid .npy header ({printable(why)[:300]}). Save the array with "
                    "numpy.save(path, array)") from None
    if binding is not None and dtype.kind == "V" and dtype.fields is None and dtype.subdtype is None:
        dtype = _ml_dtype_saved_as_void(dtype, binding.dtype)
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or dtype.kind in "OSUVMm":
        why = ("it holds Python objects (an object array), which reprobuild never loads" if dtype.hasobject else
               f"its dtype {dtype.str} is not a number or bool type")
        raise error(f"{what} {path!r} is not a plain .npy array of numbers: {why}. Save one with "
                    "numpy.save(path, array) from a numeric array")
    native = dtype.newbyteorder("=") if dtype.byteorder not in ("=", "|") else dtype
    if binding is not None:
        _check_against_binding(binding, path, tuple(shape), native, error)
    count = math.prod(shape)
    offset = stream.tell()
    if len(data) - offset != count * dtype.itemsize:
        raise error(f"{what} {path!r} holds {len(data) - offset} bytes of data, but its header says shape "
                    f"{list(shape)} {dtype.name}, which is {count * dtype.itemsize} bytes (truncated, or not "
                    "written by numpy.save?)")
    array = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    array = array.reshape(shape[::-1]).T if fortran_order else array.reshape(shape)
    if fortran_order or native is not dtype:
        array = np.ascontiguousarray(array, dtype=native)  # its binding's size at most: checked above
    return array


def _ml_dtype_saved_as_void(dtype: np.dtype[Any], expected: str) -> np.dtype[Any]:
    """numpy.save writes ml_dtypes' types (bfloat16, the float8s, ...) as raw bytes ('<V2'): read such a file as
    the binding's type when that is one of them and has the same size; else the void dtype, which is refused."""
    if expected in (*NARROW, *FLOATS) and np_dtype(expected).kind == "V" and np_dtype(expected).itemsize == \
            dtype.itemsize:
        return np_dtype(expected)
    return dtype


def _binding_nbytes(binding: Any) -> int:
    return math.prod(binding.shape) * itemsize(binding.dtype)


def _expect(binding: Any) -> str:
    return (f"save exactly that array (numpy.save(path, array) of an array of shape {tuple(binding.shape)} and "
            f"dtype {binding.dtype})")


def _check_against_binding(binding: Any, path: str, shape: tuple[int, ...], dtype: np.dtype[Any],
                           error: type[ReprobuildError]) -> None:
    """A .npy header's shape and dtype against the engine input it is for, before any data is read."""

    if shape != tuple(binding.shape):
        advice = shape_advice(binding.name, getattr(binding, "declared", None), binding.shape, shape)
        raise error(f"input {binding.name!r} from {path!r} has shape {list(shape)}; the engine was built for "
                    f"{list(binding.shape)}. {advice}")
    try:
        name = dtype_name(dtype)
    except ReprobuildError:
        name = dtype.str
    if name != binding.dtype:
        raise error(f"input {binding.name!r} from {path!r} has dtype {name}; the engine expects {binding.dtype} "
                    f"(convert with array.astype(numpy.{binding.dtype}) before numpy.save)")


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


def add_device_option(parser: argparse.ArgumentParser, more: str = "") -> None:
    """--device N: the GPU a cuda engine runs on (``Runtime(device=N)``), the same in every command that runs an
    engine; a cpu engine has one device, 0, and another is refused (exit code 2), as ``build`` refuses it."""
    parser.add_argument("--device", type=int, metavar="N",
                        help=f"the GPU to run a cuda engine on (default: 0; the engine file is the same on every "
                             f"GPU){more}. A cpu engine has one device, 0: any other is refused (exit code 2)")


def add_max_memory_option(parser: argparse.ArgumentParser, what: str) -> None:
    """--max-memory SIZE: the memory cap of a build (``BuilderConfig.max_memory``) or of loading and running an
    engine (``Runtime(max_memory=...)``); over it is a ResourceError, exit code 13, before anything is allocated."""
    parser.add_argument("--max-memory", type=parse_memory_size, metavar="SIZE",
                        help=f"the most memory {what} may take, e.g. 512M or 8G; more is refused (exit code 13) "
                             "before anything is allocated (default: the device's memory on cuda, the host's on cpu)")


class DeprecatedAlias(argparse.Action):
    """An old option kept for a while: it stores into its replacement's ``dest`` and says on stderr what replaces
    it and in which version it goes (a test fails once that version ships, so it cannot be forgotten)."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, replacement: str, remove_in: str,
                 **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.replacement, self.remove_in = replacement, remove_in

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"{parser.prog}: warning: {option_string} is deprecated and will be removed in reprobuild "
              f"{self.remove_in}; use {self.replacement} instead", file=sys.stderr)
        setattr(namespace, self.dest, values)


# --- JSON output (--json) -------------------------------------------------------------------------------------


def json_float(value: float) -> float | str:
    """A float for JSON output: finite ones as numbers; NaN and the infinities, which JSON lacks, as the strings
    "nan", "inf" and "-inf"."""
    value = float(value)
    if math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"


def print_json(document: Any) -> None:
    """One canonical JSON document on stdout (sorted keys, no NaN: ``allow_nan=False`` raises on one), what every
    ``--json`` prints; logs and progress stay on stderr."""
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=True, allow_nan=False, ensure_ascii=False) + "\n")


# --- engines and manifests named by an option (build --replay, verify --against) ---------------------------


def read_engine_or_manifest(path: str, option: str, hint: str = "") -> Side:
    """The pinned manifest an engine file embeds, or a manifest file, for ``option``. Anything else (an ONNX model,
    a text file) is a UsageError naming what the file looks like, before any work; ``hint`` says what to run
    instead. A damaged engine or manifest is a FormatError, as everywhere."""
    data = read_bounded(path, MAX_ENGINE_BYTES, f"{option} file")
    first = data.lstrip(b" \t\r\n\xef\xbb\xbf")[:1]  # whitespace and a UTF-8 byte-order mark may come first
    if not data.startswith(MAGIC) and first != b"{":
        onnx_like = path.lower().endswith(".onnx") or data[:1] == b"\x08"  # a ModelProto starts with ir_version
        looks = " (it looks like an ONNX model)" if onnx_like else ""
        raise UsageError(f"{option} {path!r} is neither an engine file nor a manifest{looks}: an engine starts with "
                         f"{MAGIC!r} and a manifest is a JSON object, but this file starts with {data[:8]!r}. Give "
                         f"the engine reprobuild build wrote or the manifest written beside it (NAME.manifest.json)"
                         + (f"; {hint}" if hint else ""))
    return load_side(data, path)


# --- engine inputs: one convention for run, verify, compare and bench -----------------------------------------


def add_engine_input_options(parser: argparse.ArgumentParser, *,
                             default_seed: int | None) -> argparse._ArgumentGroup:
    """``--input NAME=FILE.npy`` (repeatable), ``--inputs DIR`` and ``--seed SEED``: where an engine's inputs come
    from, the same in every command that runs one (``engine_inputs`` reads them). ``default_seed`` draws every
    input when none of the three is given; None means the inputs must be given. Returns the "inputs" group, for a
    command's own input options."""
    default = ("none: every input must come from --input, --inputs or --seed" if default_seed is None else
               f"{default_seed} when neither --input nor --inputs is given")
    group = parser.add_argument_group(
        "inputs", "Each engine input comes from --input if named there, else from NAME.npy in --inputs DIR, else "
                  "from --seed; an input pinned at build time (--input-value) has its pinned value unless given. "
                  "Arrays are read from plain .npy files, never unpickled.")
    group.add_argument("--input", action="append", type=parse_pair("NAME=FILE.npy"), default=[],
                       metavar="NAME=FILE.npy",
                       help="an input's array from a .npy file; repeat for each input. It wins over --inputs for "
                            "that input")
    group.add_argument("--inputs", metavar="DIR",
                       help="read NAME.npy per input from DIR (the name made file-safe, as run --output-dir writes "
                            "them); inputs named with --input are taken from there instead")
    group.add_argument("--seed", type=parse_seed, metavar="SEED",
                       help="draw every input not given with --input or --inputs from SEED: standard normal floats, "
                            "zeros for integers; the same values in run, verify, compare and bench, and as the "
                            f"golden record of build --seed SEED (default: {default})")
    group.add_argument("--input-shape", action="append", type=parse_shape_option, default=[], metavar="NAME=DxD...",
                       help="a dynamic engine's input shape for this run (repeat per input; the profile's opt "
                            "shape, or the --input file's shape, when not given); refused for a fixed-shape engine")
    group.add_argument("--profile-index", type=int, default=0, metavar="N",
                       help="the optimization profile a dynamic engine runs with (default: 0)")
    parser.set_defaults(input_default_seed=default_seed)
    return group


def engine_at_shape(args: argparse.Namespace, engine: Any) -> Any:
    """The engine a command runs: a dynamic engine at the shapes ``--input-shape`` (else an ``--input`` file's
    shape, else the profile's opt shape) gives each dynamic input, with ``--profile-index``'s tactics
    (``Engine.at_shape``: exactly what a context of the dynamic engine runs at those shapes); a fixed-shape engine
    as it is. A shape outside the profile is a ProfileShapeError (exit code 7)."""
    shapes = dict(getattr(args, "input_shape", []) or [])
    profile = getattr(args, "profile_index", 0)
    if not engine.is_dynamic:
        if shapes or profile:
            raise UsageError("--input-shape and --profile-index are for an engine built with optimization profiles "
                             f"(--profile); this engine has fixed shapes: "
                             f"{', '.join(f'{b.name} {list(b.shape)}' for b in engine.inputs)}")
        return engine
    count = engine.num_optimization_profiles
    if not 0 <= profile < count:
        raise UsageError(f"--profile-index {profile}: the engine has {count} optimization profile(s), 0 to "
                         f"{count - 1}")
    dims = engine.header.dynamic[0].profiles[profile].inputs
    unknown = sorted(set(shapes) - set(dims))
    if unknown:
        raise UsageError(f"--input-shape names {unknown}, which are not inputs with dynamic dimensions; those are "
                         f"{sorted(dims)}")
    files = dict(getattr(args, "input", []) or [])
    for name in sorted(set(dims) & set(files) - set(shapes)):
        shapes[name] = tuple(_npy_shape(files[name]))
    return engine.at_input_shapes(profile, shapes)


def _npy_shape(path: str) -> tuple[int, ...]:
    """The shape a .npy file's header declares (the data is read, and checked, later)."""
    return tuple(read_npy(path, f"--input {path}:", UsageError).shape)


def engine_inputs(args: argparse.Namespace, bindings: Sequence[Any]) -> tuple[dict[str, np.ndarray], str]:
    """The arrays ``add_engine_input_options`` asked for, one per binding in binding order, and a phrase saying
    where they came from. Arrays read from files must have the binding's shape (an InputError that says how to
    get an engine for another shape); their dtype is checked by the engine."""
    by_name = {b.name: b for b in bindings}
    listing = ", ".join(f"{b.name} {list(b.shape)} {b.dtype}" for b in bindings)
    files: dict[str, str] = {}
    for name, path in args.input:
        if name not in by_name:
            raise InputError(f"--input {name}={path}: the engine has no input {name!r}; its inputs are: {listing}")
        if name in files:
            raise UsageError(f"--input names {name!r} twice ({files[name]!r} and {path!r}); give each input once")
        files[name] = path
    directory = args.inputs
    if directory is not None and not os.path.isdir(directory):
        raise UsageError(f"--inputs {directory!r} is not a directory; give the directory that holds NAME.npy per "
                         "input")
    seed = args.seed
    if seed is None and not files and directory is None:
        seed = args.input_default_seed
    drawn = golden_inputs(bindings, seed) if seed is not None else {}  # all drawn: each the same whatever is given
    inputs: dict[str, np.ndarray] = {}
    sources: dict[str, str] = {}
    missing = []
    for b in bindings:
        pinned = getattr(b, "value", None)
        path = files.get(b.name)
        if path is None and directory is not None:
            in_dir = os.path.join(directory, safe_filename(b.name) + ".npy")
            path = in_dir if os.path.exists(in_dir) else None
        if path is not None:
            inputs[b.name] = _input_from_file(b, path)
            sources[b.name] = f"from {directory if b.name not in files else path}"
        elif pinned is not None:
            inputs[b.name] = np.array(pinned)
        elif seed is not None:
            inputs[b.name] = drawn[b.name]
            sources[b.name] = f"seeded standard normal (seed {seed})"
        else:
            missing.append(b.name)
    if missing:
        where = (f"; --inputs {directory} holds none of "
                 f"{', '.join(safe_filename(n) + '.npy' for n in missing)}" if directory is not None else "")
        raise InputError(f"no value for input(s) {missing}{where}. Give each with --input NAME=FILE.npy, as "
                         f"NAME.npy in --inputs DIR, or draw it with --seed SEED; this engine's inputs: {listing}")
    return inputs, _sources_phrase(sources)


def _input_from_file(binding: Any, path: str) -> np.ndarray:
    return read_npy(path, f"input {binding.name!r}:", InputError, binding)


def _sources_phrase(sources: dict[str, str]) -> str:
    """'from DIR', 'seeded standard normal (seed 0)', or per source the inputs it gave: 'a from x.npy; b seeded
    ...' (pinned inputs not given are left out)."""
    groups: dict[str, list[str]] = {}
    for name, source in sources.items():
        groups.setdefault(source, []).append(name)
    if not groups:
        return "pinned at build time"
    if len(groups) == 1:
        return printable(next(iter(groups)))
    return printable("; ".join(f"{', '.join(names)} {source}" for source, names in groups.items()))

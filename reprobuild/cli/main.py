"""``reprobuild``: the command line. Errors print one clear message and exit with a documented code.

This module imports only the standard library, reprobuild's small ``errors``, ``fileio``, ``textformat`` and
``versions`` modules and the argparse pieces of ``reprobuild.cli.parsing``; the subcommands (NumPy, onnx, the
builder, ...) are imported by :func:`_load_commands`, inside :func:`main`'s guarded region, so that a Ctrl-C
while they load prints ``interrupted`` and exits 130 instead of a traceback. Messages are printed with their
non-printable characters escaped (a name from a file may hold terminal escapes), and a MemoryError that no
allocation site turned into a ResourceError is one here (exit 13), never an internal error.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import itertools
import os
import sys
import traceback
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from reprobuild import __version__
from reprobuild.cli.parsing import CommandParser, Subcommands
from reprobuild.core.errors import EXIT_CODES, ReprobuildError, ResourceError
from reprobuild.core.fileio import Terminated, install_sigterm_cleanup, write_count, written_since
from reprobuild.core.textformat import printable
from reprobuild.core.versions import version_text

#: The subcommand modules (``reprobuild.cli.NAME``), in the order ``--help`` lists them.
COMMANDS = ("build", "refit", "run", "bench", "inspect", "verify", "compare", "diff", "attest", "conformance")

INTERRUPTED = 130  #: 128 + SIGINT, as a shell reports a command stopped by Ctrl-C
BROKEN_PIPE = 141  #: 128 + SIGPIPE, as a shell reports a coreutils command whose reader went away (| head -1)


def _epilog() -> str:
    codes = "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES)
    return (f"exit codes:\n{codes}\n  130  interrupted (Ctrl-C)\n  141  the output pipe closed early (| head): "
            f"output stops quietly\n  143  terminated (SIGTERM)")


class _VersionAction(argparse.Action):
    """``--version``: reprobuild's version and its dependencies', read from package metadata when asked for
    (``reprobuild.core.versions``), never by importing them."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(version_text(__version__))
        parser.exit()


def _add_version_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action=_VersionAction,
                        help="show reprobuild's version and its dependencies' (Python, numpy, onnx, pydantic, "
                             "msgpack, ml_dtypes, cupy), then exit")


def _answer_version(argv: Sequence[str]) -> None:
    """``--version`` among the options before the command is answered here, before the subcommands (and NumPy,
    onnx, the builder) load: it takes a few milliseconds instead of seconds."""
    leading = list(itertools.takewhile(lambda arg: arg.startswith("-"), argv))
    if "--version" in leading:
        parser = argparse.ArgumentParser(prog="reprobuild", add_help=False, allow_abbrev=False)
        _add_version_option(parser)
        parser.parse_known_args(leading)  # exits


def _load_commands() -> list[ModuleType]:
    """The subcommand modules; the heavy imports (NumPy, onnx, the builder) happen here."""
    return [importlib.import_module(f"reprobuild.cli.{name}") for name in COMMANDS]


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reprobuild",
        description="Deterministic, reproducible builds of inference engines from ONNX models. Every tactic "
                    "decision is recorded in a manifest that can be pinned, diffed and replayed.",
        epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
    )
    _add_version_option(parser)
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    common.add_argument("-v", "--verbose", action="count", default=0, help="more output (-vv: debug log)")
    common.add_argument("-q", "--quiet", action="store_true", help="only errors and the result")
    common.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=CommandParser)
    for module in _load_commands():
        module.add_parser(Subcommands(sub, common, _epilog()))
    return parser


def _say(message: str) -> None:
    """A message on stderr, never an exception (stderr may be a closed pipe too)."""
    with contextlib.suppress(OSError, ValueError):
        print(message, file=sys.stderr, flush=True)


def _silence_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null, so that the interpreter's last flush of what is still
    buffered does not fail again ("Exception ignored ... BrokenPipeError") at exit."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)


def _what_was_written(mark: int) -> str:
    """After a signal: which outputs were written in full before it (a group's renames are never split by one;
    see reprobuild.core.fileio), or that none was and the partial files were removed."""
    written = written_since(mark)
    if not written:
        return "; partial files were removed, no output was written"
    return f" after writing {', '.join(map(repr, written))} in full; no partial file is left"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``reprobuild ARGV`` and return the exit code. argparse's own errors (and --help) raise SystemExit."""
    install_sigterm_cleanup()
    mark = write_count()
    command = "reprobuild"
    debug = False
    try:
        _answer_version(sys.argv[1:] if argv is None else argv)
        args = make_parser().parse_args(argv)
        command, debug = f"reprobuild {args.command}", bool(args.debug)
        code = int(args.run(args))
        sys.stdout.flush()  # a reader that went away shows here, not in the interpreter's flush at exit
        return code
    except Terminated as exc:
        _say(f"{command}: terminated (SIGTERM){_what_was_written(mark)}")
        return exc.exit_code
    except KeyboardInterrupt:
        written = written_since(mark)
        _say(f"{command}: interrupted{_what_was_written(mark) if written else ''}")
        return INTERRUPTED
    except BrokenPipeError:  # `reprobuild inspect E | head -1`: stop quietly, as coreutils do
        _silence_stdout()
        return BROKEN_PIPE
    except ReprobuildError as exc:
        if debug:
            traceback.print_exc()
        _say(f"{command}: error: {printable(str(exc), keep_newlines=True)}")  # names in it may hold escapes
        return 2 if command == "reprobuild diff" else exc.exit_code  # diff speaks diff(1): 2 means trouble
    except MemoryError:  # an allocation no site named: still a resource limit, never an internal error
        if debug:
            traceback.print_exc()
        _say(f"{command}: error: ran out of memory (MemoryError): this machine, its cgroup or ulimit -v gave "
             "less than the work needed. Free memory, set --max-memory (where the command has it) to be refused "
             "before any work, or use smaller inputs")
        return 2 if command == "reprobuild diff" else ResourceError.exit_code
    except Exception as exc:
        if debug:
            traceback.print_exc()
        _say(f"{command}: internal error: {type(exc).__name__}: {printable(str(exc), keep_newlines=True)}\n"
             "This is a bug in reprobuild; please report it with the command you ran (add --debug for the "
             "traceback).")
        return 2 if command == "reprobuild diff" else 1


if __name__ == "__main__":
    sys.exit(main())

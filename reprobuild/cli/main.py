"""``reprobuild``: the command line. Errors print one clear message and exit with a documented code."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from reprobuild import __version__
from reprobuild.cli import build, compare, conformance, diff, inspect, run, verify
from reprobuild.cli.common import Subcommands
from reprobuild.errors import EXIT_CODES, ReprobuildError
from reprobuild.fileio import Terminated, install_sigterm_cleanup


def _epilog() -> str:
    codes = "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES)
    return f"exit codes:\n{codes}\n  130  interrupted (Ctrl-C)\n  143  terminated (SIGTERM)"


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reprobuild",
        description="Deterministic, reproducible builds of inference engines from ONNX models. Every tactic "
                    "decision is recorded in a manifest that can be pinned, diffed and replayed.",
        epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"reprobuild {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0, help="more output (-vv: debug log)")
    common.add_argument("-q", "--quiet", action="store_true", help="only errors and the result")
    common.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (build, run, inspect, verify, compare, diff, conformance):
        module.add_parser(Subcommands(sub, common, _epilog()))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    install_sigterm_cleanup()
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except Terminated as exc:
        print(f"reprobuild {args.command}: terminated (SIGTERM); partial files were removed", file=sys.stderr)
        return exc.exit_code
    except ReprobuildError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"reprobuild {args.command}: error: {exc}", file=sys.stderr)
        return 2 if args.command == "diff" else exc.exit_code  # diff speaks diff(1): 2 means trouble
    except KeyboardInterrupt:
        print(f"reprobuild {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        print(f"reprobuild {args.command}: internal error: {type(exc).__name__}: {exc}\n"
              "This is a bug in reprobuild; please report it with the command you ran (add --debug for the "
              "traceback).", file=sys.stderr)
        return 2 if args.command == "diff" else 1


if __name__ == "__main__":
    sys.exit(main())

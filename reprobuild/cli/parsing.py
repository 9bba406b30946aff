"""The argparse pieces ``reprobuild.cli.main`` builds its parser with, apart from ``common`` (which imports NumPy,
the engine and the diff): main imports them at module level and still loads nothing heavy before its guarded
region, so ``--version`` stays fast and a Ctrl-C while the subcommands load prints ``interrupted``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser: an argument it does not know is its own error, shown with its own usage. (argparse
    hands a subcommand's unknown arguments back to the top-level parser, which reported them under the top-level
    usage, ``reprobuild [-h] [--version] COMMAND ...``.)"""

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


class Subcommands:
    """Adds the common options and the exit-code epilog to every subcommand parser."""

    def __init__(self, sub: argparse._SubParsersAction, common: argparse.ArgumentParser, epilog: str) -> None:
        self.sub, self.common, self.epilog = sub, common, epilog

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = self.sub.add_parser(
            name, parents=[self.common], epilog=self.epilog, formatter_class=argparse.RawDescriptionHelpFormatter,
            allow_abbrev=False, **kwargs)  # no prefix matching: --input must never silently become --inputs
        return parser

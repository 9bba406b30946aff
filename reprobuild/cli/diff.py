"""``reprobuild diff``: what changed between two manifests or engines, and why. Exit codes as diff(1)."""

from __future__ import annotations

import argparse
import os
import sys

from reprobuild.cli.parsing import Subcommands
from reprobuild.diffing import diff
from reprobuild.diffing.render import to_json, to_markdown, to_text

EPILOG = """exit codes (as diff(1)):
    0  identical pinned content (after --ignore)
    1  different; always when one side is an engine and the other a manifest that records it but holds
       another pinned part (edited after the build: the summary starts with EDITED and names the fields,
       whatever --ignore drops)
    2  trouble: an unreadable, corrupted or invalid input, or a bad option"""


def add_parser(sub: Subcommands) -> None:
    p = sub.add_parser(
        "diff", help="explain the differences between two manifests or engines",
        description="Compare two builds, given as manifests or engine files (an engine's embedded manifest is "
                    "used): a one-line summary, then only the sections that differ: model digest, build config, "
                    "environment field by field, bindings, layers added, removed or renamed (matched by "
                    "structural key), tactic changes with both tactics by value and their timing evidence, "
                    "kernel sources, memory figures, golden output digests, engine digest.",
    )
    p.epilog = EPILOG
    p.add_argument("a", help="the first manifest or engine")
    p.add_argument("b", help="the second manifest or engine")
    p.add_argument("--format", choices=("text", "json", "markdown"), default="text",
                   help="text (aligned tables, colour on a terminal), json (the ManifestDiff schema in "
                        "manifests/diff.schema.json) or markdown (for pull-request comments); default: text")
    p.add_argument("--include-evidence", action="store_true",
                   help="also compare the evidence: timings, timestamps, the selector (left out by default)")
    p.add_argument("--ignore", action="append", default=[], metavar="FIELD",
                   help="drop differences under this field path, e.g. environment.cuda.driver, config.timing, "
                        "golden, engine; repeatable. A path that names no field of either side is refused (exit "
                        "code 2), listing the fields there are")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="colour the text format: auto colours on a terminal, unless NO_COLOR is set")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    result = diff(args.a, args.b, ignore=args.ignore, include_evidence=args.include_evidence)
    if args.format == "json":
        sys.stdout.write(to_json(result))
    elif args.format == "markdown":
        sys.stdout.write(to_markdown(result))
    else:
        color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty()
                                           and not os.environ.get("NO_COLOR"))
        sys.stdout.write(to_text(result, color))
    return 0 if result.identical else 1

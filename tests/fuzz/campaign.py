"""The fuzz campaign on the command line: every case in a forked worker process under a memory limit
(``tests.fuzz.runner``), the tally and peak memory written to a JSON report that a later run resumes.

    python -m tests.fuzz.campaign --cases 100000 --seed 0 --report campaign.json [--workers 2]
    python -m tests.fuzz.campaign --ci --report ci.json              # the CI campaign (tests/fuzz/test_fuzz.py)
    python -m tests.fuzz.campaign --seed 0 --replay engine_forgery:1234 [--write DIR]

A case is a function of (seed, target, index) alone: ``random.Random(f"{seed}/{target}/{index}")`` draws every
choice, and the seeds (``tests.fuzz.seeds``) are built without timing, so two campaigns with the same arguments
on one machine give the same tally, and any case can be replayed alone (``--replay``; add ``--write DIR`` for the
file it makes). ``--cases`` is split among the targets by their shares (``tests.fuzz.targets``). Each worker may
add ``--memory-limit`` of address space; a case running past ``--case-timeout`` is killed and recorded; the
report is rewritten every 30 s, and ``--resume`` skips the chunks it records as done. Run big campaigns at low
priority on a shared machine (``nice -n 10``). The exit status is 1 when any case failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence

from tests.fuzz.exercise import Context
from tests.fuzz.runner import DEFAULT_MEMORY_LIMIT, Campaign, make_case
from tests.fuzz.targets import BY_NAME, ci_plan, plan_cases

# --- the command line ----------------------------------------------------------------------------------------------

def _size(text: str) -> int:
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1:].upper() in units else int(text)


def replay(seed: int, spec: str, write: str | None) -> int:
    """Run one case in this process, its traceback shown; with ``write``, save the file it makes there."""
    from tests.fuzz.seeds import seeds

    name, _, index = spec.partition(":")
    target = BY_NAME[name]
    with tempfile.TemporaryDirectory(prefix="reprobuild-fuzz-") as scratch:
        ctx = Context(seeds(), scratch)
        case = make_case(target, seed, int(index), ctx)
        print(f"{name}:{index}: " + "; ".join(case.notes))
        if write:
            os.makedirs(write, exist_ok=True)
            path = os.path.join(write, f"{name}-{index}{case.suffix}")
            with open(path, "wb") as f:
                f.write(case.artifact)
            print(f"wrote {path} ({len(case.artifact)} bytes)")
        case.run()
    print("accepted")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.campaign", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--cases", type=int, help="cases in all, split among the targets by their shares")
    size.add_argument("--ci", action="store_true", help="the CI campaign's counts (times --scale)")
    parser.add_argument("--scale", type=float, default=1.0, help="with --ci: multiply every count")
    parser.add_argument("--targets", help=f"comma-separated subset of: {', '.join(BY_NAME)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="forked worker processes at a time (default 1)")
    parser.add_argument("--memory-limit", type=_size, default=DEFAULT_MEMORY_LIMIT,
                        help="address space a worker may add to what it had when forked (default 2G)")
    parser.add_argument("--case-timeout", type=float, default=300.0, help="seconds before a case is killed")
    parser.add_argument("--report", help="write the tally here (JSON, rewritten every 30 s)")
    parser.add_argument("--resume", action="store_true", help="skip the chunks --report records as done")
    parser.add_argument("--replay", metavar="TARGET:INDEX", help="run one case here, with its traceback")
    parser.add_argument("--write", metavar="DIR", help="with --replay: save the case's file in DIR")
    args = parser.parse_args(argv)
    if args.replay:
        return replay(args.seed, args.replay, args.write)
    names = args.targets.split(",") if args.targets else list(BY_NAME)
    unknown = sorted(set(names) - set(BY_NAME))
    if unknown:
        parser.error(f"unknown target(s) {unknown}; known: {', '.join(BY_NAME)}")
    plan = plan_cases(args.cases, names) if args.cases is not None else ci_plan(args.scale, names)
    campaign = Campaign(plan, args.seed, args.workers, args.memory_limit, args.case_timeout, args.report,
                        progress=True, argv=["python -m tests.fuzz.campaign", *(argv or sys.argv[1:])])
    if args.resume and args.report and os.path.exists(args.report):
        campaign.resume(args.report)
    from tests.fuzz.seeds import seeds

    tally = campaign.run(seeds())
    print(tally.summary())
    print(f"wall time {campaign.wall_seconds:.0f} s")
    print(tally.describe_failures())
    return 1 if tally.failed() else 0


if __name__ == "__main__":
    sys.exit(main())

"""A fuzz case and a fuzz target: what every target module defines, and what the campaign runs."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.fuzz.exercise import Context

#: By default a case's peak resident memory may grow by this much (engines are run under a 256 MiB cap, or under
#: the default cap, with inputs of at most 64 MiB); amplification cases set a tighter bound from their size.
DEFAULT_GROWTH_BOUND = 1024 * 2**20


@dataclass
class Case:
    """What a target made: the file (for a reproducer), and what to do with it."""

    run: Callable[[], None]
    artifact: bytes = b""
    suffix: str = ".bin"
    notes: list[str] = field(default_factory=list)
    growth_bound: int = DEFAULT_GROWTH_BOUND


@dataclass(frozen=True)
class Target:
    name: str
    family: str  #: "engine", "manifest", "onnx" or "input": what the campaign's acceptance counts
    make: Callable[[random.Random, Context], Case]
    share: float  #: its share of a campaign's cases
    ci: int  #: its cases in the CI campaign
    doc: str

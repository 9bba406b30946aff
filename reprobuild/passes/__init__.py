"""Graph passes: pure functions Network -> Network, applied in the order the build config lists them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from reprobuild.errors import UsageError
from reprobuild.ir import Network
from reprobuild.passes.fold import fold_constants
from reprobuild.passes.simplify import eliminate_dead_code, eliminate_identities

Pass = Callable[[Network], Network]

PASSES: dict[str, Pass] = {
    "eliminate_dead_code": eliminate_dead_code,
    "eliminate_identities": eliminate_identities,
    "fold_constants": fold_constants,
}

DEFAULT_PASSES: tuple[str, ...] = ("fold_constants", "eliminate_identities", "eliminate_dead_code")


def run_passes(network: Network, names: Sequence[str]) -> Network:
    for name in names:
        if name not in PASSES:
            raise UsageError(f"unknown pass {name!r}; known passes: {', '.join(sorted(PASSES))}")
        network = PASSES[name](network)
    return network

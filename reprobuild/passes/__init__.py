"""Graph passes: pure functions Network -> Network, one small module each, run in the order the build config
lists them. Each pass has a version, bumped whenever what it produces changes; the manifest records (name,
version) of every pass a build ran, so a replay refuses a manifest made with other pass code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from reprobuild.core import symbolic
from reprobuild.core.errors import UsageError
from reprobuild.ir import Network
from reprobuild.passes._pass_list import PASS_LIST
from reprobuild.passes.base import Pass

PASSES: dict[str, Pass] = {p.name: p for p in PASS_LIST}

#: The passes a build runs unless its config says otherwise, in this order.
DEFAULT_PASSES: tuple[str, ...] = (
    "fold_constants", "eliminate_identities", "fuse_roll", "fuse_gelu", "fuse_layer_normalization",
    "fuse_rms_normalization", "fuse_attention",
    "fold_batchnorm", "fuse_conv_epilogue", "fuse_gemm_epilogue", "fuse_elementwise", "eliminate_dead_code",
)


#: The pass a precision flag appends to the build's passes (after them, so that it converts the fused layers).
PRECISION_PASSES: dict[str, str] = {"bf16": "reduce_precision_bf16", "fp16": "reduce_precision_fp16"}


def pass_versions(names: Sequence[str]) -> list[tuple[str, int]]:
    return [(name, get_pass(name).version) for name in names]


def get_pass(name: str) -> Pass:
    if name not in PASSES:
        raise UsageError(f"unknown pass {name!r}; known passes: {', '.join(sorted(PASSES))}")
    return PASSES[name]


def run_passes(network: Network, names: Sequence[str]) -> Network:
    """The passes in order. On a network with dynamic dimensions, two sizes are equal only when they are equal at
    every size of the symbols (``symbolic.identical_only``): a pass rewrites only what holds over the whole range;
    a comparison it needs that the range cannot decide fails naming the pass."""
    if not network.symbols:
        for name in names:
            network = get_pass(name).run(network)
        return network
    ranges = dict((network.source or {}).get("symbol_ranges") or {})  # what the parser kept the symbols over
    with symbolic.identical_only(), symbolic.symbol_ranges(ranges) if ranges else contextlib.nullcontext():
        for name in names:
            try:
                network = get_pass(name).run(network)
            except symbolic.SymbolicShapeError as exc:
                raise symbolic.SymbolicShapeError(
                    f"pass {name!r} on a network with dynamic dimensions: {exc}") from None
    return network

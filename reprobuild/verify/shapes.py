"""Batch invariance across shapes of a dynamic engine (``reprobuild verify --shapes batch=1,3,8,32``): does a
sample's output keep its bits whatever batch size it is run in, and wherever it sits in the batch?

The first dimension named is the batch: the axis of every input and output that has it holds the samples. One
sample is drawn, and for each batch size and each position in that batch it is run among batch-mates drawn afresh;
its slice of every output must have the bits it has in the first run (the smallest batch, position 0). Further
dimensions named (``sequence=16,32``) repeat the check at each of their sizes (a sample of another length is
another sample); dimensions not named take the profile's opt size. Every shape runs on the engine at that shape
(``Engine.at_shape``), exactly as a context of the dynamic engine runs it.

Integer inputs are drawn from {0, 1} (valid token ids and attention masks alike) and float ones from N(0, 1), with
a generator seeded by ``seed`` and the shape, so a report names a failing shape that can be run again.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from reprobuild.core.dtypes import np_dtype
from reprobuild.core.errors import UsageError
from reprobuild.core.symbolic import SymInt
from reprobuild.engine import Engine
from reprobuild.engine.dynamic import resolve_sizes


@dataclass(frozen=True)
class ShapeCheck:
    """One (sizes of the other dimensions, batch size) case: whether the sample kept its bits at every position."""

    sizes: Mapping[str, int]
    batch: int
    positions: int
    identical: bool
    detail: str


def _batch_axis(engine: Engine, name: str, symbol: str) -> int | None:
    dims = engine.symbolic_shape(name)
    axes = [i for i, d in enumerate(dims) if isinstance(d, SymInt) and d.symbols == (symbol,) and d == _sym(d)]
    return axes[0] if axes else None


def _sym(d: SymInt) -> Any:
    from reprobuild.core.symbolic import symbol

    return symbol(d.symbols[0])


def _draw(rng: np.random.Generator, shape: Sequence[int], dtype: str) -> np.ndarray:
    if dtype == "bool":
        return rng.integers(0, 2, shape).astype(bool)
    if np.issubdtype(np_dtype(dtype), np.integer):
        return rng.integers(0, 2, shape).astype(np_dtype(dtype))
    return rng.standard_normal(shape).astype(np_dtype(dtype))


def shape_invariance(engine: Engine, profile: int, shapes: Sequence[tuple[str, Sequence[int]]],
                     seed: int = 0) -> list[ShapeCheck]:
    """The checks described in the module docstring, for a dynamic ``engine`` and ``shapes``: (dimension, sizes)
    pairs, the batch first."""
    if not engine.is_dynamic:
        raise UsageError("--shapes needs an engine built with optimization profiles (--profile); this engine has "
                         "fixed shapes")
    if not shapes:
        raise UsageError("--shapes needs at least one DIM=S1,S2,... (the batch dimension first)")
    symbols = tuple(engine.header.dynamic[0].symbols)
    named = [name for name, _ in shapes]
    unknown = sorted(set(named) - set(symbols))
    if unknown or len(set(named)) != len(named):
        raise UsageError(f"--shapes names {unknown or 'a dimension twice'}; the engine's dynamic dimensions are "
                         f"{', '.join(symbols)}, each named once")
    batch_symbol, batch_sizes = shapes[0]
    dyn = engine.header.dynamic[0].profiles[profile]
    run_inputs = [b for b in engine.inputs if b.value is None]
    axes = {b.name: _batch_axis(engine, b.name, batch_symbol) for b in run_inputs}
    out_axes = {b.name: _batch_axis(engine, b.name, batch_symbol) for b in engine.outputs}
    if any(a is None for a in out_axes.values()) or not any(a is not None for a in axes.values()):
        raise UsageError(f"{batch_symbol!r} is not a batch dimension of this engine: every output and at least one "
                         "input must have it as an axis of its own")
    opt = {name: shape for name, (_, shape, _) in dyn.inputs.items()}
    opt_sizes = resolve_sizes(engine.header, profile, {n: tuple(s) for n, s in opt.items()})
    others = [(name, list(sizes)) for name, sizes in shapes[1:]]
    checks = []
    for combo in itertools.product(*(sizes for _, sizes in others)):
        fixed = {**opt_sizes, **{name: size for (name, _), size in zip(others, combo)}}
        base_rng = np.random.default_rng([seed, *combo])
        sample: dict[str, np.ndarray] = {}
        reference: dict[str, bytes] | None = None
        first = sorted(batch_sizes)
        for batch in first:
            sizes = {**fixed, batch_symbol: batch}
            bad = []
            for position in range(batch):
                rng = np.random.default_rng([seed, *combo, batch, position])
                feeds = {}
                for b in run_inputs:
                    shape = [int(d) if isinstance(d, int) else d.evaluate(sizes) for d in engine.symbolic_shape(b.name)]
                    value = _draw(rng, shape, b.dtype)
                    axis = axes[b.name]
                    if axis is not None:
                        if b.name not in sample:
                            one = list(shape)
                            one[axis] = 1
                            sample[b.name] = _draw(base_rng, one, b.dtype)
                        index = [slice(None)] * len(shape)
                        index[axis] = slice(position, position + 1)
                        value[tuple(index)] = sample[b.name]
                    feeds[b.name] = value
                shapes_now = {n: tuple(v.shape) for n, v in feeds.items() if n in dyn.inputs}
                at = engine.at_shape(profile, resolve_sizes(engine.header, profile, shapes_now))
                outputs = at.create_execution_context().execute(feeds)
                got = {name: np.ascontiguousarray(np.take(value, [position], axis=out_axes[name])).tobytes()
                       for name, value in outputs.items()}
                if reference is None:
                    reference = got
                elif got != reference:
                    bad.append(position)
            detail = (f"identical at all {batch} position(s)" if not bad else
                      f"bits differ at position(s) {bad[:8]} from the sample's first run "
                      f"({batch_symbol}={first[0]}, position 0)")
            checks.append(ShapeCheck({k: v for k, v in fixed.items() if k != batch_symbol}, batch, batch, not bad,
                                     detail))
    return checks

"""Type inference on symbolic shapes (a network with dynamic axes, :mod:`reprobuild.core.symbolic`), through each
op's own concrete ``infer``, unchanged.

Each symbol is given a large prime, twice (two probe sets): every symbolic size in the input shapes and the
attributes is evaluated at the probes, the op's concrete ``infer`` runs on those numbers, and each output size is
read back as what it is at both probes: a number the probes do not change (a static size); an expression of the
inputs or attributes (a size passed through or broadcast: ``sequence + 1`` from a Concat); or a product of symbol
powers times an integer (``batch*sequence`` from a Flatten or a Reshape). Anything else (a size the op computes by
other arithmetic on a dynamic one, such as a strided convolution's spatial size) is refused with the op and the
sizes, never guessed. A layer definition thereby needs no symbolic code, and a tactic's identity (which covers its
layer's ``infer``) does not change for it; the runtime checks every layer through the concrete ``infer`` again at
each shape it runs (:meth:`reprobuild.ir.Network.specialize`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from reprobuild.core import symbolic
from reprobuild.core.symbolic import SymbolicShapeError, SymInt
from reprobuild.layers.base import LayerDef, TensorType

#: Probe sets: each symbol takes this many sizes inside its range.
_PROBE_SETS = 4
#: The largest probe size (when the range allows a smaller one): products of a few stay far below 2**63.
_PROBE_CAP = 1 << 15
#: Most symbols one layer may meet, and the highest power of a product read back.
_MAX_SYMBOLS, _MAX_POWER = 6, 3


def _probes(names: Sequence[str]) -> list[dict[str, int]]:
    """Sizes inside each symbol's range (range checks in ``infer``, such as a Slice to the sequence length inside
    a 64-row position table, hold at them), spread out and different from one symbol to the next where the range
    allows."""
    out = []
    for k in range(_PROBE_SETS):
        values = {}
        for j, s in enumerate(names):
            lo, hi = symbolic.symbol(s).bounds()
            hi = min(hi, max(lo, _PROBE_CAP))  # inside the range, and small enough that products fit int64
            span = hi - lo
            pick = (hi - j, lo + span // 2 + j, lo + span // 3 + 2 * j, lo + 1 + 3 * j)[k]
            values[s] = min(max(pick, lo), hi)
        out.append(values)
    return out


def has_symbols(attrs: Mapping[str, Any], inputs: Sequence[TensorType]) -> bool:
    return any(symbolic.is_symbolic(t.shape) for t in inputs) or symbolic.is_symbolic(dict(attrs))


def infer_symbolic(opdef: LayerDef, attrs: Mapping[str, Any], inputs: Sequence[TensorType]) -> list[TensorType]:
    names = sorted({s for v in (*[t.shape for t in inputs], *attrs.values()) for s in _symbols(v)})
    if len(names) > _MAX_SYMBOLS:
        raise SymbolicShapeError(f"{len(names)} dynamic dimensions meet in one layer; at most {_MAX_SYMBOLS}")
    probes = _probes(names)
    runs = []
    for values in probes:
        concrete = [TensorType(tuple(symbolic.substitute(t.shape, values)), t.dtype) for t in inputs]
        runs.append(opdef.infer({k: symbolic.substitute(v, values) for k, v in attrs.items()}, concrete))
    known = _expressions(attrs, inputs)
    out = []
    for i, types in enumerate(zip(*runs)):
        if len({(t.dtype, t.rank) for t in types}) != 1:
            raise SymbolicShapeError(f"{opdef.op}: output {i}'s dtype or rank depends on the size of a dynamic "
                                     "dimension; an engine for a range of shapes cannot hold it")
        dims = tuple(_decode(opdef.op, i, [t.shape[d] for t in types], names, probes, known)
                     for d in range(types[0].rank))
        out.append(TensorType(dims, types[0].dtype))
    return out


def _symbols(value: Any) -> set[str]:
    if isinstance(value, SymInt):
        return set(value.symbols)
    if isinstance(value, (tuple, list)):
        return {s for v in value for s in _symbols(v)}
    return set()


def _expressions(attrs: Mapping[str, Any], inputs: Sequence[TensorType]) -> list[SymInt]:
    found: dict[SymInt, None] = {}
    for value in (*[t.shape for t in inputs], *attrs.values()):
        for v in (value if isinstance(value, (tuple, list)) else (value,)):
            if isinstance(v, SymInt):
                found[v] = None
    return list(found)


def _decode(op: str, output: int, got: Sequence[int], names: Sequence[str], probes: Sequence[Mapping[str, int]],
            known: Sequence[SymInt]) -> Any:
    """The one expression that gives ``got`` at every probe set: a constant, a size of the inputs or attributes,
    or an integer times a product of symbol powers."""
    if len(set(got)) == 1:  # the probes vary every symbol whose range allows: a static size
        return int(got[0])
    candidates: list[Any] = list(known)
    for mono in _monomials(names):
        base = [mono.evaluate(p) for p in probes]
        if base[0] and got[0] % base[0] == 0:
            candidates.append(got[0] // base[0] * mono)
    for expr in candidates:
        if isinstance(expr, SymInt) and all(expr.evaluate(p) == g for p, g in zip(probes, got)):
            return expr
    raise SymbolicShapeError(f"{op} computes its output {output}'s size from a dynamic dimension in a way reprobuild "
                             f"cannot follow symbolically (sizes {list(got)} at the probe sizes {probes}); build it "
                             "for fixed sizes (--input-shape)")


def _monomials(names: Sequence[str]) -> list[SymInt]:
    """Every product of the symbols with powers up to _MAX_POWER, lowest degree first."""
    out: list[Any] = [1]
    for s in names:
        out = [m * symbolic.symbol(s) ** k for m in out for k in range(_MAX_POWER + 1)]
    monos = [m for m in out if isinstance(m, SymInt)]
    return sorted(monos, key=lambda m: (m.degree, str(m)))


def infer(opdef: LayerDef, attrs: Mapping[str, Any], inputs: Sequence[TensorType]) -> list[TensorType]:
    """``opdef.infer``, or :func:`infer_symbolic` when a shape or an attribute holds a SymInt (what a pass calls to
    check a rewrite it is about to make)."""
    return infer_symbolic(opdef, attrs, inputs) if has_symbols(attrs, inputs) else opdef.infer(attrs, inputs)

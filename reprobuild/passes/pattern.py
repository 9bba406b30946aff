"""A small pattern matcher, so that a rewrite pass is a pattern and a replacement.

A pattern is a tree of :class:`Op` nodes whose leaves are :class:`Var` (any tensor, bound by name; a name used
twice must bind the same tensor) and :class:`Const` (a constant, optionally a scalar close to a given value).
``match(pattern, tensor, index)`` walks from the tensor that the pattern's root produces back through its
producers; Add and Mul are tried in both operand orders. An Op with a ``name`` that appears twice must match the
same layer both times. Every tensor the matched layers produce, except the root's, must be read only by matched
layers (and not be a network output), so that replacing them loses nothing::

    gelu = Op("Mul", Op("Mul", Var("x"), Op("Add", Op("Erf", Op("Div", Var("x"), Const(2 ** 0.5))), Const(1.0))),
              Const(0.5))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reprobuild.ir import Layer, Network, TensorInfo

COMMUTATIVE = frozenset({"Add", "Mul"})


@dataclass(frozen=True)
class Var:
    name: str


@dataclass(frozen=True)
class Const:
    """A constant input; with ``value``, a constant whose every element is within ``rtol`` of it."""

    value: float | None = None
    name: str | None = None
    rtol: float = 1e-4


@dataclass(frozen=True)
class Op:
    op: str | tuple[str, ...]
    inputs: tuple[Any, ...] = ()
    #: attribute values the layer must have (compared after normalization to tuples)
    attrs: Mapping[str, Any] = field(default_factory=dict)
    name: str | None = None

    def __init__(self, op: str | tuple[str, ...], *inputs: Any, attrs: Mapping[str, Any] | None = None,
                 name: str | None = None) -> None:
        object.__setattr__(self, "op", op)
        object.__setattr__(self, "inputs", inputs)
        object.__setattr__(self, "attrs", dict(attrs or {}))
        object.__setattr__(self, "name", name)


class GraphIndex:
    """Producers, readers and constants of a network, for matching."""

    def __init__(self, network: Network) -> None:
        self.network = network
        self._producer = {t: layer for layer in network.layers for t in layer.outputs}
        self._readers: dict[str, int] = {}
        self._reader_layers: dict[str, list[Layer]] = {}
        for layer in network.layers:
            for t in layer.inputs:
                self._readers[t] = self._readers.get(t, 0) + 1
            for t in dict.fromkeys(layer.inputs):
                self._reader_layers.setdefault(t, []).append(layer)
        self._outputs = {t.name for t in network.outputs}
        #: Names handed out by ``fresh_name`` for this network: replacements applied together never share one.
        self.reserved: set[str] = set()

    def producer(self, tensor: str) -> Layer | None:
        return self._producer.get(tensor)

    def const(self, tensor: str) -> np.ndarray | None:
        return self.network.constants.get(tensor)

    def tensor(self, name: str) -> TensorInfo:
        return self.network.tensors[name]

    def single_use(self, tensor: str) -> bool:
        """Read by exactly one layer and not a network output."""
        return self._readers.get(tensor, 0) == 1 and tensor not in self._outputs

    def readers(self, tensor: str) -> int:
        return self._readers.get(tensor, 0)

    def reader_layers(self, tensor: str) -> list[Layer]:
        """The layers that read ``tensor``, in network order (each once)."""
        return list(self._reader_layers.get(tensor, ()))

    def is_output(self, tensor: str) -> bool:
        return tensor in self._outputs


@dataclass
class Match:
    layers: list[Layer]
    vars: dict[str, str]
    consts: dict[str, np.ndarray]
    named: dict[str, Layer]

    def const_value(self, name: str) -> float:
        return float(np.asarray(self.consts[name]).reshape(-1)[0])


def _close(value: np.ndarray, want: float, rtol: float) -> bool:
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    return arr.size >= 1 and bool(np.all(np.abs(arr - want) <= rtol * max(abs(want), 1e-12)))


def _match(pattern: Any, tensor: str, index: GraphIndex, m: Match, root: bool) -> bool:
    if isinstance(pattern, Var):
        bound = m.vars.get(pattern.name)
        if bound is not None:
            return bound == tensor
        m.vars[pattern.name] = tensor
        return True
    if isinstance(pattern, Const):
        value = index.const(tensor)
        if value is None or (pattern.value is not None and not _close(value, pattern.value, pattern.rtol)):
            return False
        if pattern.name:
            m.consts[pattern.name] = value
        return True
    layer = index.producer(tensor)
    ops = (pattern.op,) if isinstance(pattern.op, str) else pattern.op
    if layer is None or layer.op not in ops or len(layer.inputs) != len(pattern.inputs):
        return False
    if pattern.name and pattern.name in m.named:
        return m.named[pattern.name] is layer
    for key, want in pattern.attrs.items():
        got = layer.attr(key)
        if (tuple(got) if isinstance(got, (list, tuple)) else got) != want:
            return False
    orders: list[Sequence[int]] = [range(len(layer.inputs))]
    if layer.op in COMMUTATIVE and len(layer.inputs) == 2:
        orders.append((1, 0))
    for order in orders:
        trial = Match(list(m.layers), dict(m.vars), dict(m.consts), dict(m.named))
        if all(_match(p, layer.inputs[i], index, trial, False) for p, i in zip(pattern.inputs, order)):
            trial.layers.append(layer)
            if pattern.name:
                trial.named[pattern.name] = layer
            m.layers, m.vars, m.consts, m.named = trial.layers, trial.vars, trial.consts, trial.named
            return True
    return False


def match(pattern: Op, tensor: str, index: GraphIndex) -> Match | None:
    """The match of ``pattern`` rooted at the layer producing ``tensor``, or None."""
    m = Match([], {}, {}, {})
    if not _match(pattern, tensor, index, m, True):
        return None
    unique = list({id(layer): layer for layer in m.layers}.values())
    m.layers = unique
    for layer in unique:
        for out in layer.outputs:
            if out == tensor:
                continue
            reads = sum(1 for other in unique for t in other.inputs if t == out)
            if index.is_output(out) or index.readers(out) != reads:
                return None
    return m


def fresh_name(index: GraphIndex, base: str) -> str:
    """``base``, or ``base`` with underscores appended, that no tensor of the network and no earlier call on this
    index has."""
    name = base
    while name in index.network.tensors or name in index.reserved:
        name += "_"
    index.reserved.add(name)
    return name


@dataclass(frozen=True)
class Replacement:
    """Layers ``old`` of a network to be replaced by ``new`` (with these new constants)."""

    old: tuple[Layer, ...]
    new: Layer
    constants: Mapping[str, np.ndarray] = field(default_factory=dict)


def replace_all(network: Network, replacements: Sequence[Replacement]) -> Network:
    """The network with every replacement made: each new layer placed where the last of its old layers was, the
    ONNX nodes of the old layers its origin unless it names its own. The replacements' layers must be disjoint.
    One new network for them all, so a pass that finds n matches costs one validation of the network, not n."""
    position = {id(layer): i for i, layer in enumerate(network.layers)}
    placed: dict[int, Layer] = {}
    gone: set[int] = set()
    consts = dict(network.constants)
    for r in replacements:
        ids = {id(layer) for layer in r.old}
        if ids & gone:
            raise AssertionError(f"replacements overlap at layer {r.new.name!r}: a bug in the pass")
        gone |= ids
        origin = r.new.origin or tuple(dict.fromkeys(n for layer in r.old for n in layer.origin))
        placed[max(position[i] for i in ids)] = Layer(r.new.name, r.new.op, r.new.inputs, r.new.outputs,
                                                      r.new.attrs, origin)
        consts.update(r.constants)
    layers = [placed.get(i, layer) for i, layer in enumerate(network.layers) if i in placed or id(layer) not in gone]
    return network.derive(layers, consts)


def replace_layers(network: Network, old: Sequence[Layer], new: Layer,
                   constants: Mapping[str, np.ndarray] | None = None) -> Network:
    """The network with the layers ``old`` replaced by ``new`` (see ``replace_all``)."""
    return replace_all(network, [Replacement(tuple(old), new, dict(constants or {}))])


class Claims:
    """The layers that a round of matching has taken: a match that shares a layer with an earlier one waits for
    the next round (on the rewritten network), so the result is what replacing one match at a time gives."""

    def __init__(self) -> None:
        self.taken: set[int] = set()
        self.replacements: list[Replacement] = []

    def add(self, old: Sequence[Layer], new: Layer, constants: Mapping[str, np.ndarray] | None = None) -> bool:
        ids = {id(layer) for layer in old}
        if ids & self.taken:
            return False
        self.taken |= ids
        self.replacements.append(Replacement(tuple(old), new, dict(constants or {})))
        return True

    def overlaps(self, old: Sequence[Layer]) -> bool:
        return any(id(layer) in self.taken for layer in old)


#: A fusion from one root layer: (network, index, root) -> (the layers it replaces, the new layer, new constants) or
#: None where the root starts no fusable chain.
Fusion = Callable[[Network, GraphIndex, Layer], "tuple[Sequence[Layer], Layer, Mapping[str, np.ndarray]] | None"]


def fuse_rounds(network: Network, fusions: Mapping[str, Fusion]) -> Network:
    """Apply the fusion of each root layer's op (``fusions``: op -> fusion), in layer order, every non-overlapping
    result of a round at once; a chain that shares a layer with an earlier one is looked at again on the rewritten
    network, until a round finds nothing."""
    while True:
        index, claims = GraphIndex(network), Claims()
        for layer in network.layers:
            fusion = fusions.get(layer.op)
            found = fusion(network, index, layer) if fusion is not None else None
            if found is not None:
                claims.add(*found)
        if not claims.replacements:
            return network
        network = replace_all(network, claims.replacements)


def rewrite(network: Network, pattern: Op, build: Any) -> Network:
    """Apply ``build(match, index) -> Layer | None`` wherever ``pattern`` matches, in layer order; matches that
    overlap an earlier one are tried again on the rewritten network, until none is left."""
    while True:
        index, claims = GraphIndex(network), Claims()
        for layer in network.layers:
            for out in layer.outputs:
                found = match(pattern, out, index)
                if found is None or claims.overlaps(found.layers):
                    continue
                new = build(found, index)
                if new is not None:
                    claims.add(found.layers, new)
        if not claims.replacements:
            return network
        network = replace_all(network, claims.replacements)

"""The network IR: immutable, topologically ordered layers over named, fully shaped tensors.

A :class:`Network` is what the builder consumes. It is made by :class:`NetworkDefinition` (the mutable
definition the ONNX parser fills in, as TensorRT's ``INetworkDefinition``) and by the passes, which return new
networks rather than editing one. Structural identity (``structural_hash``, ``layer_keys``) ignores names and
depends only on ops, attributes, shapes, dtypes, weight digests and wiring.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from reprobuild.core import symbolic
from reprobuild.core.digest import array_digests, attrs_to_json, digest_of
from reprobuild.core.dtypes import DTYPES, dtype_name, itemsize
from reprobuild.core.errors import ModelError, UsageError
from reprobuild.ops import TensorType, infer_types

AttrValue = int | float | str | tuple[int, ...] | tuple[float, ...] | tuple[str, ...]

__all__ = ["DTYPES", "AttrValue", "Layer", "Network", "NetworkDefinition", "TensorInfo"]


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def size(self) -> int:
        return symbolic.prod(self.shape)  # type: ignore[return-value]  # a SymInt for a dynamic shape

    @property
    def nbytes(self) -> int:
        return self.size * itemsize(self.dtype)


@dataclass(frozen=True)
class Layer:
    name: str
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: tuple[tuple[str, AttrValue], ...] = ()
    #: The names of the ONNX nodes this layer computes (several after a fusion); not part of its identity.
    origin: tuple[str, ...] = field(default=(), compare=False)

    def attr(self, key: str, default: Any = None) -> Any:
        for k, v in self.attrs:
            if k == key:
                return v
        return default

    @property
    def attributes(self) -> dict[str, AttrValue]:
        return dict(self.attrs)


def make_attrs(attrs: Mapping[str, Any]) -> tuple[tuple[str, AttrValue], ...]:
    """Normalize attribute values (lists to tuples, numpy scalars to Python) and sort them by key."""
    out: list[tuple[str, AttrValue]] = []
    for key in sorted(attrs):
        value = attrs[key]
        if isinstance(value, (list, tuple, np.ndarray)):
            items = [v.item() if isinstance(v, np.generic) else v for v in value]
            value = tuple(int(v) if isinstance(v, bool) else v for v in items)
        elif isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, bool):
            value = int(value)
        out.append((key, value))
    return tuple(out)


@dataclass(frozen=True)
class Network:
    """An immutable, validated, topologically ordered network. Build it with :meth:`create`."""

    name: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    layers: tuple[Layer, ...]
    tensors: Mapping[str, TensorInfo]
    constants: Mapping[str, np.ndarray]
    #: Where the network came from (the frontend's model info: file digest, opset, producer); not structural.
    source: Mapping[str, Any] | None = None
    #: Network inputs whose values were pinned at build time (TensorRT's shape-input values): they are among
    #: the constants, and the runtime checks that the values it is given equal them.
    pinned_inputs: tuple[str, ...] = ()
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @staticmethod
    def create(
        name: str,
        inputs: Sequence[TensorInfo],
        outputs: Sequence[str],
        layers: Sequence[Layer],
        tensors: Mapping[str, TensorInfo],
        constants: Mapping[str, np.ndarray],
        source: Mapping[str, Any] | None = None,
        pinned_inputs: Sequence[str] = (),
    ) -> Network:
        consts: dict[str, np.ndarray] = {}
        for cname in sorted(constants):
            arr = constants[cname]
            if arr.flags.writeable or not arr.flags.c_contiguous:  # a private, frozen copy; frozen ones are shared
                arr = np.array(arr, copy=True, order="C")
                arr.setflags(write=False)
            consts[cname] = arr
        available = {i.name for i in inputs} | set(consts)
        used_tensors = set(available)
        layer_names: set[str] = set()
        for layer in layers:
            if layer.name in layer_names:
                raise ModelError(f"two layers are named {layer.name!r}; layer names must be unique")
            layer_names.add(layer.name)
            for t in layer.inputs:
                if t not in available:
                    raise ModelError(
                        f"layer {layer.name!r} ({layer.op}) reads tensor {t!r}, which is neither a network input, "
                        "a constant, nor produced by an earlier layer"
                    )
            for t in layer.outputs:
                if t in available:
                    raise ModelError(f"tensor {t!r} is produced twice (again by layer {layer.name!r})")
                if t not in tensors:
                    raise ModelError(f"layer {layer.name!r} output {t!r} has no shape or dtype")
                available.add(t)
                used_tensors.add(t)
        _check_types(layers, tensors, consts)
        for out in outputs:
            if out not in available:
                raise ModelError(f"network output {out!r} is not produced by any layer")
            if out in consts:
                raise ModelError(
                    f"network output {out!r} is a constant; an engine computes its outputs, so produce it with "
                    "a layer (the ONNX frontend adds an Identity layer) or make it depend on an input"
                )
        for info in inputs:
            if info.name in consts:
                raise ModelError(f"tensor {info.name!r} is both a network input and a constant")
        for name in pinned_inputs:
            if name not in consts:
                raise ModelError(f"pinned input {name!r} has no value among the constants")
        infos = {k: tensors[k] for k in sorted(used_tensors) if k in tensors}
        for cname, arr in list(consts.items()):
            if symbolic.is_symbolic_array(arr):
                users = sorted(layer.name for layer in layers if cname in layer.inputs)
                if not users:  # shape arithmetic the layers' attributes already hold
                    del consts[cname]
                    continue
                raise symbolic.SymbolicShapeError(
                    f"layer(s) {', '.join(repr(u) for u in users)} read {cname!r}, sizes of a dynamic axis "
                    f"({', '.join(map(str, arr.reshape(-1).tolist()))}), as data; an engine for a range of shapes "
                    "computes only shapes from them")
            infos[cname] = TensorInfo(cname, tuple(arr.shape), dtype_name(arr.dtype))
        for info in inputs:
            infos[info.name] = info
        return Network(
            name=name,
            inputs=tuple(inputs),
            outputs=tuple(infos[o] for o in outputs),
            layers=tuple(layers),
            tensors=MappingProxyType(infos),
            constants=MappingProxyType(consts),
            source=MappingProxyType(dict(source)) if source is not None else None,
            pinned_inputs=tuple(pinned_inputs),
        )

    def derive(self, layers: Sequence[Layer], constants: Mapping[str, np.ndarray] | None = None,
               tensors: Mapping[str, TensorInfo] | None = None) -> Network:
        """This network with other layers (and constants, tensor infos): what a pass returns. Pinned inputs
        always keep their values: they are bindings of the engine even when no layer reads them."""
        consts = dict(self.constants if constants is None else constants)
        for name in self.pinned_inputs:
            consts.setdefault(name, self.constants[name])
        return Network.create(self.name, self.inputs, [t.name for t in self.outputs], layers,
                              self.tensors if tensors is None else tensors, consts, self.source,
                              self.pinned_inputs)

    # --- dynamic shapes ----------------------------------------------------------------------------------------

    @property
    def symbols(self) -> tuple[str, ...]:
        """The dynamic dimensions this network's shapes and attributes depend on (sorted); () for fixed shapes."""
        cached = self._cache.get("symbols")
        if cached is None:
            found: set[str] = set()
            for info in self.tensors.values():
                for d in info.shape:
                    if isinstance(d, symbolic.SymInt):
                        found.update(d.symbols)
            for layer in self.layers:
                for _, value in layer.attrs:
                    for v in (value if isinstance(value, tuple) else (value,)):
                        if isinstance(v, symbolic.SymInt):
                            found.update(v.symbols)
            cached = self._cache["symbols"] = tuple(sorted(found))
        return cached

    def specialize(self, sizes: Mapping[str, int]) -> Network:
        """This network at one size of each dynamic dimension: every shape and attribute evaluated, and every layer
        checked again through its op's type inference with the concrete shapes (a model whose layers compute
        differently at some size than their symbolic shapes say fails here, never silently). A network of fixed
        shapes comes back unchanged."""
        symbols = self.symbols
        if not symbols:
            return self
        missing = [s for s in symbols if s not in sizes]
        if missing:
            raise symbolic.SymbolicShapeError(f"no size given for the dynamic dimension(s) {', '.join(missing)}")
        values = {s: int(sizes[s]) for s in symbols}
        bad = sorted(f"{s}={v}" for s, v in values.items() if v < 0)
        if bad:
            raise symbolic.SymbolicShapeError(f"sizes must be non-negative: {', '.join(bad)}")

        def info(t: TensorInfo) -> TensorInfo:
            return TensorInfo(t.name, tuple(symbolic.substitute(t.shape, values)), t.dtype)

        layers = [Layer(layer.name, layer.op, layer.inputs, layer.outputs,
                        tuple((k, symbolic.substitute(v, values)) for k, v in layer.attrs), layer.origin)
                  for layer in self.layers]
        return Network.create(self.name, [info(t) for t in self.inputs], [t.name for t in self.outputs], layers,
                              {k: info(t) for k, t in self.tensors.items()}, self.constants, self.source,
                              self.pinned_inputs)

    # --- structure ---------------------------------------------------------------------------------------------

    def producers(self) -> dict[str, tuple[int, int]]:
        """tensor name -> (layer index, output index) for every layer output."""
        return {t: (i, k) for i, layer in enumerate(self.layers) for k, t in enumerate(layer.outputs)}

    def consumers(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for i, layer in enumerate(self.layers):
            for t in layer.inputs:
                out.setdefault(t, []).append(i)
        return out

    def _ref(self, tensor: str, producers: Mapping[str, tuple[int, int]]) -> Any:
        """A name-free reference to a tensor: which input, which constant (by digest), or which layer output."""
        if tensor in self.constants:
            return ["const", self.constant_digest(tensor)]
        if tensor in producers:
            return ["layer", *producers[tensor]]
        return ["input", [t.name for t in self.inputs].index(tensor)]

    def constant_digest(self, name: str) -> str:
        cache = self._cache.get("const_digest")
        if cache is None:  # every constant at once, in parallel: most networks need them all
            names = list(self.constants)
            cache = dict(zip(names, array_digests([self.constants[n] for n in names])))
            self._cache["const_digest"] = cache
        return str(cache[name])

    def layer_signature(self, index: int) -> dict[str, Any]:
        """Everything that determines what a layer computes, and nothing else (no names, no position)."""
        layer = self.layers[index]
        return {
            "op": layer.op,
            "attrs": attrs_to_json(layer.attrs),
            "inputs": [
                [list(self.tensors[t].shape), self.tensors[t].dtype,
                 self.constant_digest(t) if t in self.constants else None]
                for t in layer.inputs
            ],
            "outputs": [[list(self.tensors[t].shape), self.tensors[t].dtype] for t in layer.outputs],
        }

    def layer_keys(self) -> tuple[str, ...]:
        """Structural key of each layer: its signature plus its occurrence among layers of that signature.

        Stable under renaming, and under inserting or removing layers of other signatures.
        """
        if "layer_keys" not in self._cache:
            seen: dict[str, int] = {}
            keys = []
            for sig in self.layer_signature_digests():
                n = seen.get(sig, 0)
                seen[sig] = n + 1
                keys.append(digest_of({"signature": sig, "occurrence": n}))
            self._cache["layer_keys"] = tuple(keys)
        return tuple(self._cache["layer_keys"])

    def layer_signature_digests(self) -> tuple[str, ...]:
        if "signatures" not in self._cache:
            self._cache["signatures"] = tuple(digest_of(self.layer_signature(i)) for i in range(len(self.layers)))
        return tuple(self._cache["signatures"])

    @property
    def structural_hash(self) -> str:
        """sha256 over the network's structure: ops, attributes, shapes, dtypes, weights and wiring, not names."""
        if "structural_hash" not in self._cache:
            self._cache["structural_hash"] = self._structural_hash()
        return str(self._cache["structural_hash"])

    def _structural_hash(self) -> str:
        producers = self.producers()
        return digest_of({
            "inputs": [[list(t.shape), t.dtype] for t in self.inputs],
            "pinned_inputs": [self.constant_digest(t) for t in self.pinned_inputs],
            "outputs": [self._ref(t.name, producers) for t in self.outputs],
            "layers": [
                {**self.layer_signature(i), "wiring": [self._ref(t, producers) for t in layer.inputs]}
                for i, layer in enumerate(self.layers)
            ],
        })

    def summary(self) -> str:
        ops: dict[str, int] = {}
        for layer in self.layers:
            ops[layer.op] = ops.get(layer.op, 0) + 1
        counts = ", ".join(f"{k} x{v}" for k, v in sorted(ops.items()))
        return f"{len(self.layers)} layers ({counts}), {len(self.constants)} constants"


class NetworkDefinition:
    """A mutable network under construction, as TensorRT's ``INetworkDefinition``; ``finalize()`` freezes it.

    Layers may be added in any order; ``finalize`` orders them topologically, keeping the order they were added
    in wherever the data flow allows, so the result does not depend on anything but the definition.
    """

    def __init__(self, name: str = "network") -> None:
        self.name = name
        self._inputs: list[TensorInfo] = []
        self._outputs: list[str] = []
        self._layers: list[Layer] = []
        self._tensors: dict[str, TensorInfo] = {}
        self._constants: dict[str, np.ndarray] = {}
        self._pinned: list[str] = []
        self.source: Mapping[str, Any] | None = None

    def add_input(self, name: str, shape: Sequence[int], dtype: str = "float32") -> TensorInfo:
        self._check_new(name)
        info = TensorInfo(name, tuple(d if isinstance(d, symbolic.SymInt) else int(d) for d in shape), dtype)
        self._inputs.append(info)
        self._tensors[name] = info
        return info

    def add_constant(self, name: str, value: np.ndarray, dtype: str | None = None) -> TensorInfo:
        """A constant. An object array holds sizes computed from a dynamic axis (``symbolic.int_array``), of the
        integer ``dtype`` given (default int64)."""
        self._check_new(name)
        arr = np.asarray(value)
        self._constants[name] = arr
        info = TensorInfo(name, tuple(arr.shape), (dtype or "int64") if symbolic.is_symbolic_array(arr)
                          else dtype_name(arr.dtype))
        self._tensors[name] = info
        return info

    def add_pinned_input(self, name: str, value: np.ndarray) -> TensorInfo:
        """A network input whose value is fixed when the engine is built (a shape input): a constant to the
        build, and a binding whose value the runtime checks."""
        info = self.add_constant(name, value)
        self._pinned.append(name)
        return info

    def add_layer(
        self, name: str, op: str, inputs: Sequence[str], outputs: Sequence[TensorInfo | str],
        attrs: Mapping[str, Any] | None = None, origin: Sequence[str] = (),
    ) -> Layer:
        """Add a layer. Outputs given by name only get their shapes and dtypes from the op's definition."""
        normalized = make_attrs(attrs or {})
        if any(isinstance(o, str) for o in outputs):
            types = infer_types(op, dict(normalized), [TensorType(self._tensors[t].shape, self._tensors[t].dtype)
                                                       for t in inputs], f"layer {name!r} ({op})")
            outputs = [o if isinstance(o, TensorInfo) else TensorInfo(o, t.shape, t.dtype)
                       for o, t in zip(outputs, types)]
        infos = [o for o in outputs if isinstance(o, TensorInfo)]
        for out in infos:
            self._check_new(out.name)
            self._tensors[out.name] = out
        layer = Layer(name, op, tuple(inputs), tuple(o.name for o in infos), normalized,
                      tuple(origin) or (name,))
        self._layers.append(layer)
        return layer

    def materialize_constant(self, name: str) -> Layer:
        """Make constant ``name`` the output of a layer (an Identity copying it), so that a network output whose
        value is known at build time is still computed by the engine. The value moves to a new constant that
        every layer reading ``name`` now reads."""
        if name in self._pinned:
            raise ModelError(f"network output {name!r} is also a network input whose value is pinned; an engine "
                             "cannot output a pinned input unchanged; leave its value unpinned")
        value = self._constants.pop(name)
        source = f"{name}:value"
        while source in self._tensors:
            source += "_"
        self._constants[source] = value
        self._tensors[source] = TensorInfo(source, tuple(value.shape), dtype_name(value.dtype))
        self._layers = [Layer(layer.name, layer.op, tuple(source if t == name else t for t in layer.inputs),
                              layer.outputs, layer.attrs, layer.origin) for layer in self._layers]
        layer = Layer(f"{name}:output", "Identity", (source,), (name,), (), (name,))
        self._layers.append(layer)
        return layer

    def mark_output(self, name: str) -> None:
        if name not in self._outputs:
            self._outputs.append(name)

    def tensor(self, name: str) -> TensorInfo:
        return self._tensors[name]

    def has_tensor(self, name: str) -> bool:
        return name in self._tensors

    def constant(self, name: str) -> np.ndarray | None:
        return self._constants.get(name)

    def is_input(self, name: str) -> bool:
        return any(t.name == name for t in self._inputs)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self._inputs)

    @property
    def layers(self) -> tuple[Layer, ...]:
        return tuple(self._layers)

    @property
    def pinned_inputs(self) -> tuple[str, ...]:
        return tuple(self._pinned)

    @property
    def num_layers(self) -> int:
        return len(self._layers)

    def _check_new(self, name: str) -> None:
        if name in self._tensors:
            raise ModelError(f"tensor {name!r} is defined twice; every tensor must have exactly one producer")

    def finalize(self) -> Network:
        if not self._outputs:
            raise ModelError("the network marks no outputs; mark at least one with mark_output()")
        return Network.create(
            self.name, self._inputs, self._outputs, topological_order(self._layers, self._inputs, self._constants),
            self._tensors, self._constants, self.source, self._pinned,
        )


def _check_types(layers: Sequence[Layer], tensors: Mapping[str, TensorInfo],
                 constants: Mapping[str, np.ndarray]) -> None:
    """Every layer's outputs have the shapes and dtypes its op's definition infers from its inputs."""
    def info(name: str) -> TensorType:
        if name in constants:
            arr = constants[name]
            return TensorType(tuple(arr.shape), dtype_name(arr.dtype))
        return TensorType(tensors[name].shape, tensors[name].dtype)

    for layer in layers:
        inferred = infer_types(layer.op, dict(layer.attrs), [info(t) for t in layer.inputs],
                               f"layer {layer.name!r} ({layer.op})")
        declared = [info(t) for t in layer.outputs]  # optional trailing outputs may be left out
        if len(inferred) < len(declared) or any(a != b for a, b in zip(inferred, declared)):
            raise ModelError(
                f"layer {layer.name!r} ({layer.op}) declares outputs "
                f"{[(list(t.shape), t.dtype) for t in declared]}, but its op computes "
                f"{[(list(t.shape), t.dtype) for t in inferred]} from its inputs")


def topological_order(
    layers: Sequence[Layer], inputs: Sequence[TensorInfo], constants: Mapping[str, Any]
) -> list[Layer]:
    """Kahn's algorithm, always taking the earliest-added ready layer: deterministic and order-preserving."""
    available = {t.name for t in inputs} | set(constants)
    remaining = list(layers)
    ordered: list[Layer] = []
    while remaining:
        for i, layer in enumerate(remaining):
            if all(t in available for t in layer.inputs):
                ordered.append(layer)
                available.update(layer.outputs)
                del remaining[i]
                break
        else:
            stuck = remaining[0]
            missing = [t for t in stuck.inputs if t not in available]
            raise ModelError(
                f"the network has a cycle or a dangling edge: layer {stuck.name!r} ({stuck.op}) waits for "
                f"{missing}, which nothing produces before it"
            )
    return ordered


class OptimizationProfile:
    """A range of shapes for the inputs with dynamic dimensions (TensorRT's ``IOptimizationProfile``): per input a
    (min, opt, max) shape. The builder checks each tactic at min and max and times it at opt; the runtime runs any
    shape between min and max, axis by axis."""

    def __init__(self) -> None:
        self._shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {}

    def set_shape(self, input: str, min: Sequence[int], opt: Sequence[int], max: Sequence[int]) -> None:
        shapes = tuple(tuple(int(d) for d in s) for s in (min, opt, max))
        low, mid, high = shapes
        if not len(low) == len(mid) == len(high):
            raise UsageError(f"profile shapes of {input!r} have ranks {len(low)}, {len(mid)} and {len(high)}; "
                             "min, opt and max have the input's rank")
        for axis, (a, b, c) in enumerate(zip(low, mid, high)):
            if not 0 <= a <= b <= c:
                raise UsageError(f"profile shape of {input!r} axis {axis}: min {a}, opt {b}, max {c}; each axis needs "
                                 "0 <= min <= opt <= max")
        self._shapes[input] = shapes  # type: ignore[assignment]

    def get_shape(self, input: str) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        if input not in self._shapes:
            raise UsageError(f"the profile gives no shape for {input!r}; it has {sorted(self._shapes)}")
        return self._shapes[input]

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(sorted(self._shapes))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={'x'.join(map(str, a))}:{'x'.join(map(str, b))}:{'x'.join(map(str, c))}"
                          for k, (a, b, c) in sorted(self._shapes.items()))
        return f"OptimizationProfile({inner})"


def profile_sizes(profiles: Sequence[OptimizationProfile], inputs: Mapping[str, Sequence[Any]]
                  ) -> list[tuple[dict[str, int], dict[str, int], dict[str, int]]]:
    """Per profile, the (min, opt, max) size of each dynamic dimension, from the shapes it gives the inputs whose
    declared shape (``inputs``: an int per static dimension, a symbol name or a SymInt per dynamic one) has them.
    Every dynamic input needs a shape in every profile, static axes must be the model's, and the dimensions a
    model names alike must be given alike."""
    out = []
    dynamic_inputs = sorted(n for n, dims in inputs.items() if any(not isinstance(d, int) for d in dims))
    for index, profile in enumerate(profiles):
        unknown = sorted(set(profile.inputs) - set(inputs))
        if unknown:
            raise UsageError(f"profile {index} gives a shape for {unknown}, which the network does not take; its "
                             f"inputs are {sorted(inputs)}")
        missing = [n for n in dynamic_inputs if n not in profile.inputs]
        if missing:
            raise UsageError(f"profile {index} gives no shape for {missing}, which have dynamic dimensions; give "
                             "each one min, opt and max shapes (--profile NAME=MIN:OPT:MAX)")
        sizes: tuple[dict[str, int], dict[str, int], dict[str, int]] = ({}, {}, {})
        source: dict[str, str] = {}
        for name in profile.inputs:
            dims = inputs[name]
            for which, shape in enumerate(profile.get_shape(name)):
                if len(shape) != len(dims):
                    raise UsageError(f"profile {index}: {name!r} has rank {len(dims)} ({list(map(str, dims))}); the "
                                     f"profile gives {'x'.join(map(str, shape))}")
                for axis, (dim, size) in enumerate(zip(dims, shape)):
                    if isinstance(dim, int):
                        if size != dim:
                            raise UsageError(f"profile {index}: {name!r} axis {axis} is static ({dim}) in the model; "
                                             f"the profile gives {size}")
                        continue
                    sym = dim if isinstance(dim, str) else dim.symbols[0]
                    if sizes[which].setdefault(sym, size) != size:
                        raise UsageError(f"profile {index}: {name!r} axis {axis} and {source[sym]} are both the "
                                         f"dimension {sym!r}, but the profile gives them {size} and "
                                         f"{sizes[which][sym]}")
                    source.setdefault(sym, f"{name!r} axis {axis}")
        for sym in sizes[0]:
            if sizes[0][sym] < 1:
                raise UsageError(f"profile {index}: dimension {sym!r} has min {sizes[0][sym]}; a dynamic dimension's "
                                 "min is at least 1")
        out.append(sizes)
    return out


def profile_ranges(profiles: Sequence[OptimizationProfile], inputs: Mapping[str, Sequence[Any]]
                   ) -> dict[str, tuple[int, int]]:
    """Each dynamic dimension's range over every profile (their hull): what the network is parsed and its passes
    run for."""
    ranges: dict[str, tuple[int, int]] = {}
    for low, _, high in profile_sizes(profiles, inputs):
        for sym in low:
            lo, hi = ranges.get(sym, (low[sym], high[sym]))
            ranges[sym] = (min(lo, low[sym]), max(hi, high[sym]))
    return dict(sorted(ranges.items()))

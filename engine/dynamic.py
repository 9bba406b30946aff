"""Dynamic engines: one engine for a range of shapes (optimization profiles, as TensorRT's).

A dynamic engine's header is an ordinary engine at profile 0's opt shapes, validated like any other, plus one
:class:`~reprobuild.engine.plan.EngineDynamic`: each dynamic dimension's symbol and range, the shape of every
activation and the attributes of every layer that depend on them (canonical expressions,
``reprobuild.core.symbolic.parse``), and each profile's input ranges and tactics. :func:`check_dynamic` ties that
section to the header (at profile 0's opt sizes every expression gives the header's own value, profile 0's tactics
are the header's). :func:`resolve_sizes` reads the sizes of the symbols from the shapes of one run's inputs,
refusing one outside the profile with a :class:`ProfileShapeError` naming the input, the axis and the range, and
:func:`specialize_header` writes the engine at those sizes (shapes, attributes, the profile's tactics, workspaces
and a memory plan), which the runtime validates as it validates a file (``format.check_header``) before it
prepares it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from reprobuild.core import symbolic
from reprobuild.core.dtypes import itemsize
from reprobuild.core.errors import FormatError, InputError
from reprobuild.core.symbolic import SymbolicShapeError
from reprobuild.engine.plan import EngineDynamic, EngineHeader, EngineLayer, EngineMemory, EngineTactic, EngineTensor


class ProfileShapeError(InputError):
    """An input's shape is outside the optimization profile the context runs, or its dimensions disagree about a
    dynamic dimension's size. Exit code 7 (an input error)."""


def _bad(message: str) -> FormatError:
    return FormatError(f"engine's dynamic-shape section is inconsistent: {message}; rebuild the engine")


def _parsed(value: Any, where: str, symbols: Mapping[str, Any]) -> Any:
    try:
        out = symbolic.from_text(value)
    except SymbolicShapeError as exc:
        raise _bad(f"{where}: {exc}") from None
    unknown = sorted({s for v in (out if isinstance(out, list) else [out]) if isinstance(v, symbolic.SymInt)
                      for s in v.symbols} - set(symbols))
    if unknown:
        raise _bad(f"{where} uses the symbol(s) {unknown}, which the engine does not declare")
    return out


def symbolic_shapes(header: EngineHeader) -> dict[str, list[Any]]:
    dyn = header.dynamic[0]
    return {name: _parsed(shape, f"the shape of {name!r}", dyn.symbols) for name, shape in dyn.shapes.items()}


def symbolic_attrs(header: EngineHeader) -> dict[str, dict[str, Any]]:
    dyn = header.dynamic[0]
    return {layer: {k: _parsed(v, f"attribute {k!r} of layer {layer!r}", dyn.symbols) for k, v in attrs.items()}
            for layer, attrs in dyn.attrs.items()}


def profile_sizes(dyn: EngineDynamic, index: int, shapes: Mapping[str, list[Any]]) -> list[dict[str, int]]:
    """[min, opt, max] sizes of each symbol in profile ``index``, read from its inputs' shapes."""
    out: list[dict[str, int]] = [{}, {}, {}]
    profile = dyn.profiles[index]
    for name, triple in profile.inputs.items():
        for which, shape in enumerate(triple):
            for dim, size in zip(shapes[name], shape):
                if isinstance(dim, symbolic.SymInt):
                    (symbol,) = dim.symbols
                    if out[which].setdefault(symbol, size) != size:
                        raise _bad(f"profile {index} gives {symbol!r} two sizes ({out[which][symbol]} and {size})")
    return out


def check_dynamic(header: EngineHeader) -> None:
    """The dynamic section agrees with the header it extends (see the module docstring)."""
    if not header.dynamic:
        return
    dyn = header.dynamic[0]
    activations = {t.name: t for t in header.activations}
    layers = {layer.name: layer for layer in header.layers}
    shapes = symbolic_shapes(header)
    attrs = symbolic_attrs(header)
    for name, shape in shapes.items():
        if name not in activations:
            raise _bad(f"it gives a shape for {name!r}, which is not an activation of the engine")
        if len(shape) != len(activations[name].shape):
            raise _bad(f"the shape of {name!r} has rank {len(shape)}; the tensor has {len(activations[name].shape)}")
    for name, values in attrs.items():
        if name not in layers:
            raise _bad(f"it gives attributes of {name!r}, which is not a layer of the engine")
        unknown = sorted(set(values) - set(layers[name].attrs))
        if unknown:
            raise _bad(f"it gives attribute(s) {unknown} of layer {name!r}, which the layer does not hold")
    run_time = [t.name for t in header.inputs]
    dynamic_inputs = sorted(n for n in run_time if any(isinstance(d, symbolic.SymInt) for d in shapes.get(n, [])))
    if not dynamic_inputs:
        raise _bad("no run-time input has a dynamic dimension")
    for name in dynamic_inputs:
        for dim in shapes[name]:
            if isinstance(dim, symbolic.SymInt) and (len(dim.symbols) != 1 or dim != symbolic.symbol(dim.symbols[0])):
                raise _bad(f"input {name!r} has the dimension {dim}; an input's dynamic dimension is one symbol")
    bounds = []  # each profile's [min, opt, max] sizes, once its shapes are checked
    for index, profile in enumerate(dyn.profiles):
        if sorted(profile.inputs) != dynamic_inputs:
            raise _bad(f"profile {index} gives shapes for {sorted(profile.inputs)}; the dynamic inputs are "
                       f"{dynamic_inputs}")
        if len(profile.tactics) != len(header.layers):
            raise _bad(f"profile {index} has {len(profile.tactics)} tactics for {len(header.layers)} layers")
        for name, triple in profile.inputs.items():
            if len(triple) != 3 or any(len(s) != len(shapes[name]) for s in triple):
                raise _bad(f"profile {index}: input {name!r} needs [min, opt, max] shapes of rank "
                           f"{len(shapes[name])}")
            for axis, dim in enumerate(shapes[name]):
                low, opt, high = (s[axis] for s in triple)
                if isinstance(dim, int):
                    if not low == opt == high == dim:
                        raise _bad(f"profile {index}: input {name!r} axis {axis} is static ({dim}) but the profile "
                                   f"gives {low}, {opt}, {high}")
                    continue
                lo, hi = dyn.symbols[dim.symbols[0]]
                if not lo <= low <= opt <= high <= hi:
                    raise _bad(f"profile {index}: input {name!r} axis {axis} ({dim}) has min/opt/max {low}/{opt}/"
                               f"{high}, which is not ordered inside the range [{lo}, {hi}] the engine was built for")
        bounds.append(profile_sizes(dyn, index, shapes))
    if [t.model_dump() for t in dyn.profiles[0].tactics] != [layer.tactic.model_dump() for layer in header.layers]:
        raise _bad("profile 0's tactics are not the header's layers' tactics")
    at_opt = bounds[0][1]
    for name, shape in shapes.items():
        if symbolic.substitute(shape, at_opt) != list(activations[name].shape):
            raise _bad(f"the shape of {name!r} at profile 0's opt sizes is {symbolic.substitute(shape, at_opt)}, but "
                       f"the engine's tensor has {activations[name].shape}")
    for name, values in attrs.items():
        for key, value in values.items():
            if symbolic.substitute(value, at_opt) != layers[name].attrs[key]:
                raise _bad(f"attribute {key!r} of layer {name!r} at profile 0's opt sizes is "
                           f"{symbolic.substitute(value, at_opt)}, but the layer holds {layers[name].attrs[key]}")


class DynamicView:
    """A dynamic engine's section parsed once (its expressions, each profile's sizes): what a run resolves its
    sizes with, in microseconds."""

    def __init__(self, header: EngineHeader) -> None:
        self.header = header
        self.shapes = symbolic_shapes(header)
        self.attrs = symbolic_attrs(header)
        dyn = header.dynamic[0]
        self.bounds = [profile_sizes(dyn, i, self.shapes) for i in range(len(dyn.profiles))]


def _check_profile(header: EngineHeader, index: int) -> None:
    count = len(header.dynamic[0].profiles)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
        raise ProfileShapeError(f"optimization profile {index!r} does not exist; the engine has {count} "
                                f"(0 to {count - 1})")


def profile_input_shapes(header: EngineHeader, index: int, given: Mapping[str, Sequence[int]],
                         default: int = 1) -> dict[str, tuple[int, ...]]:
    """The shape of each dynamic input of profile ``index``: the one ``given`` (names of other inputs are not
    looked at), else the profile's min (``default`` 0), opt (1) or max (2) shape."""
    _check_profile(header, index)
    profile = header.dynamic[0].profiles[index]
    return {name: tuple(given[name]) if name in given else tuple(triple[default])
            for name, triple in profile.inputs.items()}


def resolve_sizes(header: EngineHeader, index: int, shapes: Mapping[str, Sequence[int]],
                  view: DynamicView | None = None) -> dict[str, int]:
    """The size of every symbol from the shapes of dynamic inputs, each inside profile ``index``'s range, and the
    same wherever the model names it. ``view``: the section already parsed (else it is parsed here)."""
    dyn = header.dynamic[0]
    _check_profile(header, index)
    view = view or DynamicView(header)
    declared = view.shapes
    low, _, high = view.bounds[index]
    sizes: dict[str, int] = {}
    seen: dict[str, str] = {}
    for name in sorted(shapes):  # a run gives every dynamic input; set_input_shape checks one at a time
        if name not in dyn.profiles[index].inputs:
            raise ProfileShapeError(f"{name!r} is not an input with dynamic dimensions; those are "
                                    f"{sorted(dyn.profiles[index].inputs)}")
        shape = list(shapes[name])
        dims = declared[name]
        if len(shape) != len(dims):
            raise ProfileShapeError(f"input {name!r} has rank {len(shape)}; the engine takes rank {len(dims)} "
                                    f"({_shown(dims)})")
        for axis, (dim, size) in enumerate(zip(dims, shape)):
            if isinstance(dim, int):
                if size != dim:
                    raise ProfileShapeError(f"input {name!r} axis {axis} is {size}; that axis is static, "
                                            f"{dim} ({_shown(dims)})")
                continue
            (symbol,) = dim.symbols
            if not low[symbol] <= size <= high[symbol]:
                raise ProfileShapeError(
                    f"input {name!r} axis {axis} ({symbol}) is {size}, outside optimization profile {index}'s range "
                    f"[{low[symbol]}, {high[symbol]}]; give a size in the range, select another profile "
                    f"(set_optimization_profile), or rebuild with a wider --profile")
            if sizes.setdefault(symbol, size) != size:
                raise ProfileShapeError(f"input {name!r} axis {axis} ({symbol}) is {size}, but {seen[symbol]} gives "
                                        f"{symbol} = {sizes[symbol]}; the dimensions the model names alike must agree")
            seen.setdefault(symbol, f"input {name!r} axis {axis}")
    return sizes


def _shown(dims: Sequence[Any]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def specialize_header(header: EngineHeader, index: int, sizes: Mapping[str, int],
                      workspace: Callable[[EngineLayer, Mapping[str, EngineTensor]], tuple[int, bool]],
                      plan: Callable[[Mapping[str, int], Sequence[EngineLayer], Sequence[bool]], EngineMemory],
                      view: DynamicView | None = None) -> EngineHeader:
    """The engine at ``sizes`` with profile ``index``'s tactics. ``workspace(layer, tensors)`` gives a layer's
    workspace bytes and whether it aliases its input (from its tactic, resolved by the runtime), ``plan`` the
    memory plan from the tensors' byte sizes."""
    dyn = header.dynamic[0]
    view = view or DynamicView(header)
    shapes, attrs = view.shapes, view.attrs
    profile = dyn.profiles[index]

    def tensor(t: EngineTensor) -> EngineTensor:
        if t.name not in shapes:
            return t
        return dataclasses.replace(t, shape=[int(d) for d in symbolic.substitute(shapes[t.name], sizes)])

    activations = [tensor(t) for t in header.activations]
    by_name = {t.name: t for t in activations}
    by_name.update({w.name: w for w in header.weights})
    layers = []
    aliases = []
    for layer, tactic in zip(header.layers, profile.tactics):
        changed = {k: symbolic.substitute(v, sizes) for k, v in attrs.get(layer.name, {}).items()}
        draft = dataclasses.replace(layer, attrs={**layer.attrs, **changed}, tactic=EngineTactic(**tactic.model_dump()),
                                    workspace_bytes=0)
        nbytes, alias = workspace(draft, by_name)
        layers.append(dataclasses.replace(draft, workspace_bytes=nbytes))
        aliases.append(alias)
    memory = plan({t.name: symbolic.prod(t.shape) * itemsize(t.dtype) for t in activations}, layers, aliases)
    return dataclasses.replace(
        header, inputs=[tensor(t) for t in header.inputs], outputs=[tensor(t) for t in header.outputs],
        activations=activations, layers=layers, memory=memory, dynamic=[])  # an engine of fixed shapes

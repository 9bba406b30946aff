"""The op registry: every op definition of the modules listed in ``_op_list.py``, looked up by (domain, op) (one op
imports only its own module, through the generated ``reprobuild/layers/_family_index.py``), and the ops of the
plugins registered in this process (a plugin's op is found where its layer is: ``reprobuild.layers.registry``)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from reprobuild.core.dtypes import dtype_name
from reprobuild.core.errors import ModelError, UnsupportedOpError
from reprobuild.layers._family_index import FAMILY_INDEX
from reprobuild.layers.base import OpError, TensorType
from reprobuild.layers.registry import plugin_layer, plugin_not_registered
from reprobuild.ops._op_list import op_module, op_modules
from reprobuild.ops.base import OpDef, StaticInputError
from reprobuild.ops.symbolic_infer import has_symbols, infer_symbolic


@functools.cache
def _table() -> dict[tuple[str, str], OpDef]:
    table: dict[tuple[str, str], OpDef] = {}
    for module in op_modules():
        for opdef in module.OPS:
            key = (opdef.domain, opdef.op)
            if key in table:
                raise RuntimeError(f"op {key} is defined twice ({type(table[key]).__name__} and "
                                   f"{type(opdef).__name__})")
            table[key] = opdef
    return dict(sorted(table.items()))


def all_ops() -> list[OpDef]:
    """Every op definition, sorted by (domain, op)."""
    return list(_table().values())


@functools.cache
def _indexed(op: str) -> OpDef | None:
    """The definition of ``op`` of the default domain, importing only the module ``FAMILY_INDEX`` names for it (a
    runtime loads the definitions of its engine's ops, not all of them); None where the index has no entry."""
    name = FAMILY_INDEX.get(op)
    if name is None:
        return None
    return next((d for d in op_module(name).OPS if d.domain == "" and d.op == op), None)


def find_op(op: str, domain: str = "") -> OpDef | None:
    """The definition of ``op`` in ``domain``: a built-in one, else a registered plugin's. A plugin op is also
    found by the name layers give it, ``domain::op`` (see :attr:`OpDef.layer_op`)."""
    opdef = _indexed(op) if not domain else None
    if opdef is None:
        opdef = _table().get((domain, op))  # an op the index lacks: every module, then the plugins
    if opdef is None and (domain or "::" in op):
        plugin = plugin_layer(f"{domain}::{op}" if domain else op)
        opdef = plugin if isinstance(plugin, OpDef) else None
    return opdef


def get_op(op: str, domain: str = "") -> OpDef:
    opdef = find_op(op, domain)
    if opdef is None and (domain or "::" in op):
        raise plugin_not_registered(op, domain)
    if opdef is None:
        where = f" in domain {domain!r}" if domain else ""
        known = ", ".join(o.op for o in all_ops() if o.domain == domain)
        raise UnsupportedOpError(f"op {op}{where} is not supported; supported ops: {known}")
    return opdef


def located(error: ModelError, where: str) -> ModelError:
    """The error with ``where`` (a node or a layer) in front of its message. An OpError (raised without a
    location) becomes an UnsupportedOpError; a StaticInputError keeps the network inputs it names."""
    message = f"{where}: {error}"
    if isinstance(error, StaticInputError):
        return StaticInputError(message, error.inputs)
    if type(error) is OpError:
        return UnsupportedOpError(message)
    return type(error)(message)


def infer_types(op: str, attrs: Mapping[str, Any], inputs: Sequence[TensorType], where: str) -> list[TensorType]:
    """``infer`` of the op's definition, with errors located at ``where``."""
    opdef = get_op(op)
    try:
        if has_symbols(attrs, inputs):  # a network with dynamic axes, while it is built
            return infer_symbolic(opdef, attrs, inputs)
        return opdef.infer(attrs, inputs)
    except OpError as exc:
        raise located(exc, where) from None


def check_constant_inputs(op: str, attrs: Mapping[str, Any], inputs: Sequence[TensorType],
                          constants: Mapping[int, np.ndarray], where: str) -> None:
    """``check_constants`` of the op's definition, with errors located at ``where``."""
    try:
        get_op(op).check_constants(attrs, inputs, constants)
    except OpError as exc:
        raise located(exc, where) from None


_INTEGER = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


def _dtype(a: np.ndarray) -> str:
    """An array's dtype name; an object array holds sizes computed from a dynamic axis, int64 to the graph."""
    return "int64" if a.dtype == object else dtype_name(a.dtype)


def evaluate(op: str, attrs: Mapping[str, Any], inputs: Sequence[np.ndarray], where: str,
             dtypes: Sequence[str] | None = None) -> list[np.ndarray]:
    """Compute a layer on host arrays with its op's NumPy reference: how constants are folded at build time.
    ``dtypes``: the inputs' dtypes, where an object array of sizes (``core.symbolic``) stands for an integer one.

    The results must have the types ``infer`` gives; anything else is a bug in the definition and says so."""
    opdef = get_op(op)
    types = [TensorType(tuple(a.shape), dtypes[i] if dtypes is not None else _dtype(a)) for i, a in enumerate(inputs)]
    try:
        expected = opdef.infer(attrs, types)
        if op == "Cast" and inputs[0].dtype == object and expected[0].dtype in _INTEGER:
            return [inputs[0].copy()]  # sizes cast between integer types stay the sizes (the range fits the type)
        with np.errstate(all="ignore"):  # ONNX semantics: overflow gives inf, 0/0 gives nan, quietly
            results = list(opdef.compute(np, attrs, *inputs))
    except OpError as exc:
        raise located(exc, where) from None
    except (ValueError, IndexError, ArithmeticError) as exc:
        raise ModelError(f"{where}: cannot compute it at build time from its constant inputs: "
                         f"{type(exc).__name__}: {exc}") from None
    out = []
    for i, (value, want) in enumerate(zip(results, expected)):
        value = np.asarray(value)
        got = TensorType(tuple(value.shape), want.dtype if value.dtype == object else _dtype(value))
        if got != want:
            raise AssertionError(f"{where}: the reference of {op} returned output {i} as {got}, but its type "
                                 f"inference says {want}: a bug in reprobuild.ops")
        out.append(value)
    return out

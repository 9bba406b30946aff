"""The engine file: safetensors' layout, plus a version and digests.

    offset 0   magic            8 bytes   b"RPBENGN\\0"
    offset 8   format version   u32 LE
    offset 12  header length H  u64 LE    (at most MAX_HEADER_BYTES)
    offset 20  header           H bytes   msgpack map, keys sorted at every level, no extension types
    ...        zero padding to a multiple of ALIGNMENT
    ...        weight buffer    the constants, sorted by name, each at an ALIGNMENT-aligned offset
    end - 32   sha256 of every byte before it

Offsets must cover the buffer exactly and entries must be sorted and unique. Each weight carries its own sha256
(over dtype, shape and bytes, the digest the network's structural identity uses), the embedded manifest
carries its own, and the trailer covers every byte before it. Nothing in the file is ever executed: no
pickle, no code.

Loading validates the whole file before anything is allocated for it, structure first, so that a damaged or
crafted engine gives a :class:`FormatError` naming what is wrong, never another exception:

1. integrity: magic, version, sizes, the sha256 trailer, msgpack;
2. the header's schema and caps (``reprobuild.engine.plan``: types, ranks, dimensions, byte sizes, counts), and
   the weight table: sorted, unique, tiling the buffer;
3. names: weights, activations, bindings and layers each unique; weights and activations disjoint; every
   binding an activation of the same shape and dtype; pinned inputs matching their weights; each declared model
   shape (``declared_inputs``, optional: engines before it lack it) of a run-time input, of its rank, with its
   static dimensions equal to the input's;
4. wiring: layers in topological order, each activation written exactly once, by a layer or by the caller
   (network inputs), and never a weight or an input written by a layer;
5. the memory plan's bounds: every activation inside the arena, the workspace after it;
6. each layer's tactic: of the engine's backend and of the family recorded (when this installation has it);
7. each layer's op and attributes: the op has a layer definition (``reprobuild.layers``); the layer holds exactly
   the attributes its op's layers hold, as the engine's own ``attribute_schemas`` records them (format 6: the
   builder writes each op's schema from its definition, ``reprobuild.ops.layer_attributes.attribute_schema``, so
   the loader imports nothing of ``reprobuild.ops``; the schema of a built-in op must be this reprobuild's,
   ``reprobuild/layers/_attribute_schemas.py``): every required one, no other, each of its declared kind; the
   table holds a schema for each op the layers use and no other; the values are ones the layer's type inference
   accepts (the ranges the run depends on: an axis within the rank, positive strides, ...), and the layer's output
   shapes and dtypes are what that inference derives from its inputs;
8. the embedded manifest: valid, and recording the same layers, tactics, tensors and memory as the header.

Weights are then hashed one by one, and (9.) the weights a layer's run indexes with are checked by its op
(Gather's constant indices within the data's dimension, ...). Resolving each tactic by its identity (``code_sha256``,
which the Runtime takes from the installed ``tactics.lock.json``), the memory plan that depends on the tactics, the
memory cap and the preparation of each layer happen in ``Runtime.deserialize_engine`` after this.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import msgpack
import numpy as np

from reprobuild.core.digest import array_digest, attrs_to_json, little_endian, sha256_hex
from reprobuild.core.dtypes import dtype_name, np_dtype
from reprobuild.core.errors import FormatError, ReprobuildError, TacticMismatchError
from reprobuild.core.strict import Invalid, invalid_summary
from reprobuild.core.textformat import printable
from reprobuild.engine.dynamic import check_dynamic
from reprobuild.engine.plan import (
    MAX_TENSORS,
    EngineHeader,
    EngineLayer,
    EngineOpSchema,
    EngineTensor,
    EngineWeight,
    tensor_nbytes,
)
from reprobuild.kernels.backend import BACKENDS
from reprobuild.kernels.tactic import TacticRegistry
from reprobuild.layers import TensorType, find_layer
from reprobuild.layers._attribute_schemas import ATTRIBUTE_SCHEMAS
from reprobuild.layers.registry import plugin_not_registered
from reprobuild.registry.lazy import runtime_registry

MAGIC = b"RPBENGN\x00"
#: 5 (issue 21): the tactics' ``code_sha256`` are normalizer-2 identities (names without their module), which a
#: format-4 engine's cannot be compared with; such an engine is refused here, naming both versions.
#: 6 (issue 21): the header carries each op's attribute schema (``attribute_schemas``), which the loader checks the
#: layers against; a format-5 engine has none and is refused here, naming both versions.
FORMAT_VERSION = 6
ALIGNMENT = 64
MAX_HEADER_BYTES = 64 * 1024 * 1024
#: The most list and map entries a header may hold, counting each list and map as one more: what bounds the
#: memory an unpacked header takes (an empty map is one byte of msgpack but about 64 bytes in Python), to about
#: 256 MB. A network holds about 10 per layer and 10 per tensor: 4,000,000 is some 200,000 layers and tensors.
MAX_HEADER_ITEMS = 4_000_000
_PREAMBLE = struct.Struct("<8sIQ")
_DIGEST = 32


def _align(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


def _canonical(value: Any) -> Any:
    """Dicts with sorted keys and tuples as lists, recursively: msgpack then writes the same bytes every time."""
    if isinstance(value, Mapping):
        return {str(k): _canonical(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def weight_table(weights: Mapping[str, np.ndarray],
                 digests: Mapping[str, str] | None = None) -> tuple[list[dict[str, Any]], int]:
    """The header's weight entries (sorted by name, aligned offsets) and the buffer size they tile.

    Each weight's sha256 is ``array_digest`` (dtype, shape and bytes); pass ``digests`` when they are known
    already (the network has them) to skip hashing the weights again."""
    table, offset = [], 0
    for name in sorted(weights):
        arr = weights[name]
        table.append({
            "name": name, "dtype": dtype_name(arr.dtype), "shape": list(arr.shape), "offset": offset,
            "nbytes": arr.nbytes, "sha256": digests[name] if digests is not None else array_digest(arr),
        })
        offset += _align(arr.nbytes)
    return table, offset


def engine_header(header: Mapping[str, Any], weights: Mapping[str, np.ndarray],
                  digests: Mapping[str, str] | None = None) -> EngineHeader:
    """The validated header an engine of these parts has (what ``serialize_engine`` writes)."""
    table, nbytes = weight_table(weights, digests)
    try:
        return EngineHeader.model_validate({**header, "weights": table, "buffer_nbytes": nbytes})
    except Invalid as exc:  # a builder bug, not a user error: fail before writing anything
        raise AssertionError(f"the builder produced an invalid engine header: {exc}") from exc


def serialize_engine(header: Mapping[str, Any], weights: Mapping[str, np.ndarray],
                     digests: Mapping[str, str] | None = None) -> bytes:
    """Pack a header (everything but the weight table) and the weights into engine bytes.

    The weights are hashed at most once (not at all when ``digests`` are given) and copied exactly once, into
    the returned bytes.
    """
    validated = engine_header(header, weights, digests)
    full = validated.model_dump()
    if not full["dynamic"]:
        del full["dynamic"]  # a fixed-shape engine's header is as it was before dynamic engines
    chunks: list[Any] = []
    for entry in full["weights"]:
        arr = little_endian(weights[entry["name"]])
        chunks += [memoryview(arr.reshape(-1).view(np.uint8).data), b"\0" * (_align(arr.nbytes) - arr.nbytes)]
    packed = msgpack.packb(_canonical(full), use_bin_type=True)
    head = _PREAMBLE.pack(MAGIC, FORMAT_VERSION, len(packed)) + packed
    parts = [head, b"\0" * (_align(len(head)) - len(head)), *chunks]
    trailer = hashlib.sha256()
    for part in parts:
        trailer.update(part)
    return b"".join([*parts, trailer.digest()])


def deserialize_engine(data: bytes | bytearray | memoryview,
                       registry: TacticRegistry | None = None) -> tuple[EngineHeader, dict[str, np.ndarray]]:
    """Check and split engine bytes into the validated header and read-only weight arrays (zero-copy).

    Everything in the module docstring's steps 1 to 8 is checked here; ``registry`` (default: every tactic of
    this installation) tells which backend and family each recorded tactic has."""
    data = bytes(data)
    if len(data) < _PREAMBLE.size + _DIGEST:
        raise FormatError(f"engine is {len(data)} bytes, too short to be a reprobuild engine (truncated?)")
    magic, version, header_len = _PREAMBLE.unpack_from(data)
    if magic != MAGIC:
        raise FormatError(f"not a reprobuild engine: the file starts with {magic!r}, expected {MAGIC!r}")
    if version != FORMAT_VERSION:
        newer = "newer than" if version > FORMAT_VERSION else "different from"
        raise FormatError(f"engine format version {version} is {newer} the version this runtime reads "
                          f"({FORMAT_VERSION}); rebuild the engine with this reprobuild, or use a matching one")
    if header_len > MAX_HEADER_BYTES:
        raise FormatError(f"engine header claims {header_len} bytes; the limit is {MAX_HEADER_BYTES}")
    buffer_start = _align(_PREAMBLE.size + header_len)
    if buffer_start + _DIGEST > len(data):
        raise FormatError("engine is truncated: the header runs past the end of the file")
    if hashlib.sha256(data[:-_DIGEST]).digest() != data[-_DIGEST:]:
        raise FormatError("engine is corrupted or truncated: its sha256 trailer does not match its contents")
    raw = _unpack_header(data[_PREAMBLE.size:_PREAMBLE.size + header_len])
    try:
        header = EngineHeader.model_validate(raw)
    except Invalid as exc:
        raise FormatError(f"engine header does not match format version {FORMAT_VERSION}; {_REBUILD}. What does "
                          f"not match (each list and map is checked up to its first bad entry):\n"
                          f"{invalid_summary(exc)}") from None
    if any(data[_PREAMBLE.size + header_len:buffer_start]):
        raise FormatError("engine header padding is not zero")
    buffer = memoryview(data)[buffer_start:-_DIGEST]
    if len(buffer) != header.buffer_nbytes:
        raise FormatError(f"engine weight buffer is {len(buffer)} bytes; its header records {header.buffer_nbytes}")
    if sha256_hex(header.manifest) != header.manifest_sha256:
        raise FormatError("engine's embedded manifest does not match its recorded sha256")
    _check_weight_table(header, len(buffer))
    if registry is None:
        registry = runtime_registry()
    registry.load((layer.op, layer.tactic.family) for layer in header.layers)
    check_header(header, registry)
    check_embedded_manifest(header)
    weights = _weights(header, buffer)
    check_layer_constants(header, weights)
    return header, weights


class _TooManyItems(Exception):
    """The header holds more list and map entries than ``MAX_HEADER_ITEMS``."""


def _unpack_header(packed: bytes) -> Any:
    """The msgpack header as Python objects, its size bounded before it is built: each array and map at most
    ``MAX_TENSORS`` entries, and all of them together at most ``MAX_HEADER_ITEMS`` (an empty map is one byte of
    msgpack but some 64 bytes of Python, so a 64 MiB header of them would take gigabytes)."""
    budget = [MAX_HEADER_ITEMS]

    def count(container: Any) -> Any:
        budget[0] -= len(container) + 1
        if budget[0] < 0:
            raise _TooManyItems
        return container

    try:
        return msgpack.unpackb(packed, raw=False, strict_map_key=True, use_list=True, object_hook=count,
                               list_hook=count, max_array_len=MAX_TENSORS, max_map_len=MAX_TENSORS)
    except _TooManyItems:
        raise FormatError(f"engine header holds more than {MAX_HEADER_ITEMS} list and map entries (about "
                          f"200,000 layers and tensors' worth), the most an engine may hold; {_REBUILD}") from None
    except Exception as exc:
        raise FormatError(f"engine header is not valid msgpack: {printable(str(exc))[:300]}") from None


def _check_weight_table(header: EngineHeader, buffer_nbytes: int) -> None:
    """The weight entries are sorted and unique by name and tile the buffer exactly, each at its aligned offset
    with the size its shape and dtype give."""
    expected, previous = 0, None
    for w in header.weights:
        if previous is not None and w.name <= previous:
            raise FormatError(f"engine weights are not sorted and unique by name ({previous!r} then {w.name!r})")
        previous = w.name
        if w.offset != expected or w.nbytes != tensor_nbytes(w.shape, w.dtype):
            raise FormatError(f"engine weight {w.name!r}: offset {w.offset} / size {w.nbytes} do not tile the "
                              f"buffer (expected offset {expected}, size for {w.shape} {w.dtype})")
        expected = _align(w.offset + w.nbytes)
    if expected != buffer_nbytes:
        raise FormatError(f"engine weights cover {expected} bytes of a {buffer_nbytes}-byte buffer; they must tile "
                          "it exactly")


def _weights(header: EngineHeader, buffer: memoryview) -> dict[str, np.ndarray]:
    """Read-only arrays over the buffer (zero-copy), each checked against its sha256."""
    out: dict[str, np.ndarray] = {}
    for w in header.weights:
        dtype = np_dtype(w.dtype).newbyteorder("<")
        array = np.frombuffer(buffer[w.offset:w.offset + w.nbytes], dtype=dtype).reshape(w.shape)
        array = array.astype(np_dtype(w.dtype), copy=False)
        if array_digest(array) != w.sha256:
            raise FormatError(f"engine weight {w.name!r} does not match its sha256")
        out[w.name] = array
    return out


def engine_sha256(data: bytes) -> str:
    """The digest `reprobuild build` prints: sha256 of the whole engine file, as `sha256sum` would print it."""
    return sha256_hex(data)


# --- whole-header validation ---------------------------------------------------------------------------------------

_REBUILD = ("the engine file is inconsistent (damaged, edited, or not written by reprobuild); rebuild it with "
            "`reprobuild build`")


def _bad(message: str) -> FormatError:
    return FormatError(f"{message}; {_REBUILD}")


def _describe(t: EngineTensor) -> str:
    return f"{t.shape} {t.dtype}"


def check_header(header: EngineHeader, registry: TacticRegistry | None = None) -> None:
    """Validate everything in a header that the schema alone cannot (steps 3 to 7 of the module docstring): a
    :class:`FormatError` naming the first problem found. Needs no weights and allocates nothing."""
    weights: dict[str, EngineWeight] = {w.name: w for w in header.weights}
    activations = {t.name: t for t in header.activations}
    producers = _check_names_and_wiring(header, weights, activations)
    _check_bindings(header, weights, activations, producers)
    _check_memory_bounds(header, activations)
    _check_tactic_backends(header, registry)
    _check_schemas_are_installed_ones(header.attribute_schemas)
    for layer in header.layers:
        check_layer(layer, weights, activations, header.attribute_schemas)
    check_dynamic(header)
    unused = sorted(set(header.attribute_schemas) - {layer.op for layer in header.layers})
    if unused:
        raise _bad(f"engine records an attribute schema for op {unused[0]!r}, which none of its layers uses; the "
                   "builder records one for each op its layers use, and no other")


def _schema_form(schema: EngineOpSchema) -> dict[str, Any]:
    return {"attributes": {k: {"kind": a.kind, "required": a.required} for k, a in sorted(schema.attributes.items())},
            "closed": schema.closed, "names_allowed": schema.names_allowed}


def _check_schemas_are_installed_ones(schemas: Mapping[str, EngineOpSchema]) -> None:
    """The engine's schema of each built-in op is this reprobuild's (``layers/_attribute_schemas.py``, generated from
    the op definitions): an engine cannot loosen the checks of its own layers. A plugin's op (not built in) is checked
    against the engine's schema alone."""
    for op in sorted(schemas):
        installed = ATTRIBUTE_SCHEMAS.get(op)
        if installed is None:
            continue
        recorded = _schema_form(schemas[op])
        if recorded != installed:
            names = sorted(set(recorded["attributes"]) | set(installed["attributes"]))
            what = next((f"attribute {k!r}: the engine has {recorded['attributes'].get(k)}, this reprobuild "
                         f"{installed['attributes'].get(k)}" for k in names
                         if recorded["attributes"].get(k) != installed["attributes"].get(k)),
                        f"closed/names_allowed: the engine has {recorded['closed']}/{recorded['names_allowed']}, this "
                        f"reprobuild {installed['closed']}/{installed['names_allowed']}")
            raise _bad(f"engine records an attribute schema for op {op!r} that is not this reprobuild's ({what}); an "
                       "engine's schemas are its builder's, and a layer is checked against this reprobuild's")


def _unique(names: Sequence[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise _bad(f"engine has two {what}s named {name!r}; each {what} has a name of its own")
        seen.add(name)


def _check_names_and_wiring(header: EngineHeader, weights: Mapping[str, EngineTensor],
                            activations: Mapping[str, EngineTensor]) -> dict[str, str]:
    """Unique names, weights and activations disjoint, layers in topological order writing each activation
    exactly once; returns activation -> the layer that writes it."""
    _unique([w.name for w in header.weights], "weight")
    _unique([t.name for t in header.activations], "activation tensor")
    _unique([layer.name for layer in header.layers], "layer")
    _unique([t.name for t in (*header.inputs, *header.pinned_inputs)], "network input")
    _unique([t.name for t in header.outputs], "network output")
    both = sorted(set(weights) & set(activations))
    if both:
        raise _bad(f"engine tensor {both[0]!r} is both a weight and an activation tensor; the names of weights and "
                   "activations are disjoint")
    inputs = {t.name for t in header.inputs}
    first_writer: dict[str, int] = {}
    for i, layer in enumerate(header.layers):
        for t in layer.outputs:
            first_writer.setdefault(t, i)
    available = inputs | set(weights)
    producers: dict[str, str] = {}
    for i, layer in enumerate(header.layers):
        where = f"engine layer {layer.name!r} (#{i}, op {layer.op})"
        for t in layer.inputs:
            if t in available:
                continue
            j = first_writer.get(t)
            if j == i:
                raise _bad(f"{where} reads its own output {t!r}")
            if j is not None and j > i:
                raise _bad(f"engine layers are out of topological order: {where} reads {t!r}, which layer "
                           f"{header.layers[j].name!r} (#{j}) writes only later; a layer reads network inputs, "
                           "weights and the outputs of earlier layers")
            if t in activations:
                raise _bad(f"{where} reads activation {t!r}, which is neither a network input nor written by any "
                           "layer, so its memory would never be initialised")
            raise _bad(f"{where} reads tensor {t!r}, which the engine does not define (it is neither an activation "
                       "nor a weight)")
        if not layer.outputs:
            raise _bad(f"{where} writes no tensor; every layer has at least one output")
        for t in layer.outputs:
            if t in weights:
                raise _bad(f"{where} writes {t!r}, which is the name of a weight; layers write activation tensors, "
                           "and weights are read-only")
            if t in inputs:
                raise _bad(f"{where} writes {t!r}, which is a network input; only the caller writes inputs")
            if t in producers:
                raise _bad(f"{where} writes {t!r}, which layer {producers[t]!r} writes too; each activation is "
                           "written by exactly one layer")
            if t not in activations:
                raise _bad(f"{where} writes {t!r}, which is not among the engine's activation tensors")
            producers[t] = layer.name
            available.add(t)
    for name in activations:
        if name not in inputs and name not in producers:
            raise _bad(f"engine activation {name!r} is neither a network input nor written by any layer")
    return producers


def _check_bindings(header: EngineHeader, weights: Mapping[str, EngineWeight],
                    activations: Mapping[str, EngineTensor], producers: Mapping[str, str]) -> None:
    for kind, bindings in (("input", header.inputs), ("output", header.outputs)):
        for b in bindings:
            t = activations.get(b.name)
            if t is None:
                raise _bad(f"engine {kind} binding {b.name!r} is not among its activation tensors")
            if (b.shape, b.dtype) != (t.shape, t.dtype):
                source = f"layer {producers[b.name]!r} writes" if b.name in producers else "the engine holds"
                raise _bad(f"engine {kind} binding {b.name!r} is {_describe(b)}, but {source} it as "
                           f"{_describe(t)}; a binding has the shape and dtype of its tensor")
    inputs = {b.name: b for b in header.inputs}
    for name, declared in header.declared_inputs.items():
        binding = inputs.get(name)
        if binding is None:
            raise _bad(f"engine declares a model shape for {name!r}, which is not one of its run-time inputs")
        if len(declared) != len(binding.shape) or any(
                isinstance(d, bool) or (isinstance(d, int) and d != s) or (isinstance(d, str) and not 0 < len(d) <= 256)
                for d, s in zip(declared, binding.shape)):
            raise _bad(f"engine input {name!r} is {_describe(binding)}, but its declared model shape is {declared}: "
                       "a declared shape has the input's rank, equal static dimensions, and short symbols")
    for pin in header.pinned_inputs:
        w = weights.get(pin.name)
        if w is None or (w.shape, w.dtype, w.sha256) != (pin.shape, pin.dtype, pin.sha256):
            raise _bad(f"engine pinned input {pin.name!r} ({_describe(pin)}) has no matching value among its "
                       "weights (a weight of the same name, shape, dtype and sha256)")
        if pin.name in activations:
            raise _bad(f"engine pinned input {pin.name!r} is also an activation tensor; its value is a weight")


def _check_memory_bounds(header: EngineHeader, activations: Mapping[str, EngineTensor]) -> None:
    """Every activation inside the arena and aligned, the workspace right after it, every size aligned: what makes
    the views a context carves out of its scratch memory valid. (That the plan is the one the runtime derives is
    checked once the tactics are resolved.)"""
    mem = header.memory
    offsets = mem.offsets
    missing = sorted(set(activations) - set(offsets))
    extra = sorted(set(offsets) - set(activations))
    if missing or extra:
        raise _bad(f"engine memory plan places {extra[:5]}, which are not activation tensors, and misses "
                   f"{missing[:5]}; it places exactly the activation tensors")
    for name in sorted(activations):
        t, offset = activations[name], offsets[name]
        nbytes = tensor_nbytes(t.shape, t.dtype)
        if offset % mem.alignment or offset + nbytes > mem.activation_bytes:
            raise _bad(f"engine memory plan places activation {name!r} ({nbytes} bytes) at offset {offset}, which "
                       f"is not inside the {mem.activation_bytes}-byte activation arena on a {mem.alignment}-byte "
                       "boundary")
    for what, value in (("activation arena", mem.activation_bytes), ("workspace", mem.workspace_bytes),
                        ("library workspace", mem.library_bytes)):
        if value % mem.alignment:
            raise _bad(f"engine memory plan's {what} is {value} bytes, not a multiple of its alignment "
                       f"{mem.alignment}")
    if mem.workspace_offset != mem.activation_bytes:
        raise _bad(f"engine memory plan puts the workspace at offset {mem.workspace_offset}; it follows the "
                   f"activation arena, at {mem.activation_bytes}")
    widest = max(header.layers, key=lambda layer: layer.workspace_bytes, default=None)
    if widest is not None and widest.workspace_bytes > mem.workspace_bytes:
        raise _bad(f"engine layer {widest.name!r} reserves {widest.workspace_bytes} workspace bytes, more than the "
                   f"memory plan's workspace of {mem.workspace_bytes}")


def _check_tactic_backends(header: EngineHeader, registry: TacticRegistry | None) -> None:
    """Each layer's tactic runs on the engine's backend and belongs to the family recorded; checked before any
    tactic is resolved by its identity (a tactic this installation lacks is left to that step)."""
    if registry is None:
        registry = runtime_registry()

    for layer in header.layers:
        ref = layer.tactic
        label = f"{ref.family}.{ref.name} v{ref.version}"
        exact = True
        try:
            tactic = registry.get(layer.op, ref.name, ref.version)
        except TacticMismatchError:
            # Another version of the tactic still tells its backend and family (a tactic's name keeps both).
            others = [t for backend in BACKENDS for t in registry.candidates(layer.op, backend) if t.name == ref.name]
            if not others:
                continue
            tactic, exact = others[0], False
        where = f"engine layer {layer.name!r} (op {layer.op})"
        if tactic.backend != header.backend:
            raise _bad(f"{where} uses tactic {label}, which runs on the {tactic.backend} backend, but the engine is "
                       f"for the {header.backend} backend; every layer of an engine uses tactics of its backend")
        if tactic.family != ref.family:
            raise _bad(f"{where} records tactic {ref.name} v{ref.version} in family {ref.family!r}; that tactic "
                       f"belongs to family {tactic.family!r}")
        problem = tactic.parameter_problem(ref.parameters) if exact else None
        if problem is not None:  # fixed parameters other than the tactic's, or values it cannot run with
            raise _bad(f"{where} cannot run tactic {label} with the parameters it records: {problem}")


# --- a layer's op and attributes, through the op's definition ------------------------------------------------------

_KIND_WORDS = {"int": "an integer", "float": "a number", "string": "a string", "ints": "a list of integers",
               "floats": "a list of numbers", "strings": "a list of strings"}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _kind_fits(kind: str, value: Any, names_allowed: bool) -> bool:
    """Whether an attribute value is of the kind an op declares. ``names_allowed``: an op that canonicalizes its
    attributes may turn an ONNX enum (an int, such as Cast's ``to``) into its name."""
    if kind == "int":
        return _is_int(value) or (names_allowed and isinstance(value, str))
    if kind == "float":
        return _is_int(value) or isinstance(value, float)
    if kind == "string":
        return isinstance(value, str)
    if kind in ("ints", "floats", "strings"):
        item = {"ints": _is_int, "floats": lambda v: _is_int(v) or isinstance(v, float),
                "strings": lambda v: isinstance(v, str)}[kind]
        return isinstance(value, tuple) and all(item(v) for v in value)
    return True  # a kind an engine never holds (tensor): left to the op's type inference


def _value_words(value: Any) -> str:
    if isinstance(value, tuple):
        return f"the list {list(value)!r}"
    return f"{type(value).__name__} {value!r}"


class _Missing(KeyError):
    """An attribute the op's type inference read and the layer lacks (for an op whose layer attributes are not
    declared: a plugin's)."""


class _TrackedAttrs(Mapping[str, Any]):
    """A layer's attributes as the op's type inference reads them: records every name read, and raises
    :class:`_Missing` for a name the layer lacks."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        if key not in self._values:
            raise _Missing(key)
        return self._values[key]

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return self._values.get(key, default)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.read.add(key)
        return key in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def check_layer(layer: EngineLayer, weights: Mapping[str, EngineTensor], activations: Mapping[str, EngineTensor],
                schemas: Mapping[str, EngineOpSchema]) -> None:
    """A layer's op, attributes and output types, through the op's definition (step 7 of the module docstring).

    Attribute names and kinds: the layer holds exactly the attributes its op's layers hold (its op's entry in
    ``schemas``, the header's ``attribute_schemas``, which the builder writes from the op definition: every
    required one, no unknown one), each of the declared kind. Values: the op's type inference checks the ranges it
    and the run depend on (an axis within the rank, positive strides, ...). Then the outputs' shapes and dtypes are
    what ``infer`` derives from the inputs'."""
    where = f"engine layer {layer.name!r} (op {layer.op})"
    definition = find_layer(layer.op)
    if definition is None and "::" in layer.op:  # a plugin's op (domain::op): say which plugin to register
        raise plugin_not_registered(layer.op)
    if definition is None:  # no op, or one computed when a network is parsed, or one always lowered to another
        raise _bad(f"{where}: {layer.op!r} cannot be the op of a layer (this reprobuild has no such op)")
    attrs = {k: tuple(v) if isinstance(v, list) else v for k, v in layer.attrs.items()}
    schema = schemas.get(layer.op)
    if schema is None:
        raise _bad(f"{where}: the engine records no attribute schema for op {layer.op!r} (its header's "
                   "attribute_schemas), which the loader checks the layer's attributes against")
    kinds = schema.attributes
    for key in sorted(attrs):
        spec = kinds.get(key)
        if spec is not None and not _kind_fits(spec.kind, attrs[key], schema.names_allowed):
            raise _bad(f"{where}: attribute {key!r} is {_value_words(attrs[key])}; {layer.op}'s {key!r} is "
                       f"{_KIND_WORDS.get(spec.kind, spec.kind)}")
    if schema.closed:
        unknown = sorted(set(attrs) - set(kinds))
        missing = [k for k in sorted(kinds) if kinds[k].required and k not in attrs]
        if missing:
            instead = (f"; it has {unknown} instead, which {layer.op} does not know (renamed?)" if unknown else
                       f"; its attributes are {sorted(attrs)}")
            raise _bad(f"{where} has no attribute {missing[0]!r}, which {layer.op} needs{instead}")
        if unknown:
            raise _bad(f"{where} has attribute(s) {unknown}, which {layer.op} does not know; its attributes are "
                       f"{sorted(set(attrs) - set(unknown))}")
    types = [TensorType(tuple(t.shape), t.dtype)
             for t in ((weights[n] if n in weights else activations[n]) for n in layer.inputs)]
    tracked = _TrackedAttrs(attrs)
    inferred: Any = None
    try:
        with np.errstate(all="ignore"):
            inferred = definition.infer(tracked, types)
    except _Missing as exc:  # an op whose layer attributes are not declared (a plugin's) read one it lacks
        raise _bad(f"{where} has no attribute {str(exc.args[0])!r}, which {layer.op} needs; its attributes are "
                   f"{sorted(attrs)}") from None
    except ReprobuildError as exc:
        failure: str | None = str(exc)
    except Exception as exc:  # the attributes or shapes break the op's own arithmetic: a bad file, not a bug
        failure = f"{type(exc).__name__}: {exc}"
    else:
        failure = None
    shapes = ", ".join(f"{list(t.shape)} {t.dtype}" for t in types)
    if failure is not None:
        raise _bad(f"{where}: its attributes {layer.attrs} do not fit its inputs ({shapes}): {failure}")
    if not isinstance(inferred, (list, tuple)) or not all(isinstance(t, TensorType) for t in inferred):
        raise _bad(f"{where}: the op's type inference gives no output types for inputs ({shapes})")
    declared = [activations[t] for t in layer.outputs]
    if len(declared) > len(inferred) or any((tuple(d.shape), d.dtype) != (t.shape, t.dtype)
                                            for d, t in zip(declared, inferred)):
        raise _bad(f"{where} records outputs {[f'{d.name} {_describe(d)}' for d in declared]}, but from inputs "
                   f"({shapes}) and its attributes the op computes "
                   f"{[f'{list(t.shape)} {t.dtype}' for t in inferred]}")


def check_layer_constants(header: EngineHeader, weights: Mapping[str, np.ndarray]) -> None:
    """Each layer's weight inputs that its run indexes with are in range (``OpDef.check_constants``: Gather's
    indices within the data's dimension, ...), before any layer runs: a FormatError naming the layer."""
    tensors: dict[str, EngineTensor] = {t.name: t for t in (*header.weights, *header.activations)}
    for layer in header.layers:
        constants = {i: weights[n] for i, n in enumerate(layer.inputs) if n in weights}
        if not constants:
            continue
        definition = find_layer(layer.op)
        if definition is None:
            continue
        attrs = {k: tuple(v) if isinstance(v, list) else v for k, v in layer.attrs.items()}
        types = [TensorType(tuple(tensors[n].shape), tensors[n].dtype) for n in layer.inputs]
        try:
            definition.check_constants(attrs, types, constants)
        except ReprobuildError as exc:
            raise _bad(f"engine layer {layer.name!r} (op {layer.op}): a constant input its run indexes with is out "
                       f"of range: {exc}") from None


# --- the embedded manifest -----------------------------------------------------------------------------------------


def check_embedded_manifest(header: EngineHeader) -> None:
    """The embedded (pinned) manifest records what the header holds, layer by layer: names, ops, attributes (as
    the manifest writes them), input and output tensors, tactics by value, workspaces, bindings, backend and memory
    figures. Otherwise ``reprobuild inspect`` (which shows the manifest) could show tactics or shapes the engine
    does not use. Environment, kernel sources and golden digests are the build's record and are not compared.

    The comparison reads the manifest's JSON (``_differences``), without the manifest schema (pydantic) or the
    manifest package: the runtime needs neither. Only a manifest that does not agree (or is not JSON of the shape
    the builder writes) is validated against the schema, which names a malformed field, and compared again; the
    parts not compared are validated where the manifest is read (``inspect``, ``verify``, ``diff``:
    ``pinned_from_json``).
    """
    document = _embedded_json(header.manifest)
    if document is not None and _differences(header, document) == []:
        return
    # Not what the builder writes: the manifest schema names a malformed field first, as it always did; then the
    # validated manifest is compared again, to name the disagreement.
    from reprobuild.manifest.io import pinned_from_json  # lazy: pydantic, which the lean runtime never loads

    pinned = pinned_from_json(header.manifest, "engine's embedded manifest")
    problems = _differences(header, pinned.model_dump(mode="json"))
    if problems is None:
        raise _bad("engine's embedded manifest matches the manifest schema but cannot be compared with the header; "
                   "this is a bug in reprobuild, please report it")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise _bad("engine's embedded manifest disagrees with its header: " + "; ".join(problems[:3]) + more)


#: An embedded manifest bigger than this, or with more than this many ``[`` and ``{`` bytes (an upper bound of its
#: arrays and objects), is read through the manifest schema, whose JSON caps bound what it may take.
_DIRECT_MANIFEST_BYTES = 16 * 1024 * 1024
_DIRECT_MANIFEST_CONTAINERS = 400_000


def _embedded_json(data: bytes) -> dict[str, Any] | None:
    """The embedded manifest's JSON object; None when it is too large to read directly or not a JSON object."""
    if len(data) > _DIRECT_MANIFEST_BYTES or data.count(b"[") + data.count(b"{") > _DIRECT_MANIFEST_CONTAINERS:
        return None
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def _json_text(value: Any) -> str:
    """A value as JSON (tuples are lists, and ``true`` is not ``1``, as Python's ``True == 1`` would say)."""
    return json.dumps(value, sort_keys=True)


def _differences(header: EngineHeader, doc: Mapping[str, Any]) -> list[str] | None:
    """What the manifest ``doc`` (JSON) records differently from the header, one sentence each; None when ``doc``
    is not of the shape the builder writes (a missing key, a wrong type)."""
    tensors: dict[str, EngineTensor] = {t.name: t for t in (*header.weights, *header.activations)}
    problems: list[str] = []

    def mine(t: EngineTensor) -> tuple[Any, ...]:
        return (t.name, list(t.shape), t.dtype)

    def theirs(items: Any) -> list[tuple[Any, ...]]:
        return [(t["name"], t["shape"], t["dtype"]) for t in items]

    def compare(what: str, manifest: Any, engine: Any) -> None:
        if _json_text(manifest) != _json_text(engine):
            problems.append(f"{what}: the manifest records {manifest}, the header {engine}")

    try:
        layers, recorded, mem = doc["layers"], doc["memory"], header.memory
        compare("backend", doc["config"]["backend"], header.backend)
        compare("cuda_graph", doc["execution"]["cuda_graph"], header.cuda_graph)
        compare("inputs", theirs(doc["inputs"]), [mine(t) for t in header.inputs])
        pinned = doc["pinned_inputs"]
        compare("pinned inputs", [(*r, t["sha256"]) for r, t in zip(theirs(pinned), pinned)],
                [(*mine(t), t.sha256) for t in header.pinned_inputs])
        compare("outputs", theirs(doc["outputs"]), [mine(t) for t in header.outputs])
        compare("layers", [layer["name"] for layer in layers], [layer.name for layer in header.layers])
        if not problems:
            for layer, recorded_layer in zip(header.layers, layers):
                where = f"layer {layer.name!r}"
                attrs = attrs_to_json([(k, tuple(v) if isinstance(v, list) else v)
                                       for k, v in sorted(layer.attrs.items())])
                compare(f"{where} op", recorded_layer["op"], layer.op)
                compare(f"{where} attributes", dict(recorded_layer["attrs"]), attrs)
                compare(f"{where} inputs", theirs(recorded_layer["inputs"]), [mine(tensors[n]) for n in layer.inputs])
                compare(f"{where} outputs", theirs(recorded_layer["outputs"]),
                        [mine(tensors[n]) for n in layer.outputs])
                compare(f"{where} tactic", dict(recorded_layer["tactic"]), layer.tactic.model_dump())
                compare(f"{where} workspace bytes", recorded_layer["workspace_bytes"], layer.workspace_bytes)
        compare("weight bytes", recorded["weights_bytes"], sum(w.nbytes for w in header.weights))
        compare("activation bytes", recorded["activation_bytes"], mem.activation_bytes)
        compare("workspace bytes", recorded["workspace_bytes"], mem.workspace_bytes)
        compare("library workspace bytes", recorded["library_workspace_bytes"], mem.library_bytes)
        compare("context bytes", recorded["context_bytes"],
                mem.workspace_offset + mem.workspace_bytes + mem.library_bytes)
    except (KeyError, TypeError, AttributeError, ValueError, RecursionError):
        return None
    return problems

"""The engine header: what the runtime needs to run a built network, validated strictly on load.

Every field is typed (``reprobuild.core.strict``: pydantic's strict rules, no extra keys, without loading pydantic)
and every number is capped, so that no later arithmetic
on a header can overflow, divide by zero or ask for an impossible allocation. The caps, and why:

- ``MAX_RANK`` (16) dimensions per tensor: twice TensorRT's limit of 8, which no real network reaches, and low
  enough that the kernels that add dimensions to a tensor (a sliding window's strided view has up to twice the
  tensor's rank) stay within NumPy 1.x's limit of 32 (NumPy 2 and CuPy allow 64).
- each dimension in ``[0, MAX_DIM]`` (``2**40 - 1``) and each tensor at most ``MAX_TENSOR_BYTES`` (``2**62 - 1``)
  bytes, so element counts and byte sizes never overflow int64 (NumPy's index type), even when added up;
- every byte count and offset of the memory plan at most ``MAX_BYTES`` (``2**62 - 1``), the alignment a power of
  two of at most ``MAX_ALIGNMENT``;
- at most ``MAX_LAYERS`` layers, ``MAX_TENSORS`` activation tensors and ``MAX_WEIGHTS`` weights, at most
  ``MAX_LAYER_TENSORS`` inputs or outputs per layer, and ``MAX_BINDINGS`` network inputs or outputs: far above
  any real network, and low enough that checking them is quick;
- the attribute schemas (format 6): at most ``MAX_LAYERS`` (one per op the layers use), each of at most
  ``MAX_OP_ATTRIBUTES`` attributes, names of 1 to 256 characters and no control character, each kind one of ONNX's
  attribute types.

A header over a cap is not something reprobuild writes, so it is refused as a corrupt file (``FormatError``).
The structural checks that span several fields (names, wiring, shapes) are in ``reprobuild.engine.format``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Literal

from reprobuild.core.dtypes import DTYPES, itemsize
from reprobuild.core.strict import Bounds, Record

EngineAttr = int | float | str | list[int] | list[float] | list[str]
SHA256 = r"^[0-9a-f]{64}$"

#: The most dimensions an engine tensor may have (see the module docstring for why 16).
MAX_RANK = 16
#: The largest dimension: each is below 2**40 (a trillion elements along one axis).
MAX_DIM = 2**40 - 1
#: The most bytes one tensor may occupy: below 2**62, so sizes and sums of a few of them fit in int64.
MAX_TENSOR_BYTES = 2**62 - 1
#: The largest byte count or offset anywhere in the header (memory plan, workspaces, weight offsets).
MAX_BYTES = 2**62 - 1
#: The largest memory-plan alignment (the builder uses 256).
MAX_ALIGNMENT = 1 << 16
MAX_LAYERS = 100_000
MAX_TENSORS = 1_000_000
MAX_WEIGHTS = 1_000_000
MAX_BINDINGS = 10_000
MAX_LAYER_TENSORS = 10_000
#: The most attributes one op's schema may declare (the most any op has is 12).
MAX_OP_ATTRIBUTES = 256
#: An op's or an attribute's name in a schema: 1 to 256 characters, none of them a control character.
SCHEMA_NAME = r"^[^\x00-\x1f\x7f]{1,256}$"
#: The kinds an op attribute may have (``reprobuild.ops.attr.Attr.kind``: ONNX's attribute types). The loader checks
#: a layer's value of the first six kinds; a layer never holds the others (its op's type inference reads them).
AttributeKind = Literal["int", "float", "string", "ints", "floats", "strings", "tensor", "sparse_tensor", "graph",
                        "type_proto", "tensors", "sparse_tensors", "graphs", "type_protos"]



@dataclass(frozen=True)
class EngineTactic(Record):
    family: str
    name: str
    version: Annotated[int, Bounds(ge=1, le=2**31 - 1)]
    code_sha256: Annotated[str, Bounds(pattern=SHA256)]
    parameters: dict[str, int | str]


def tensor_nbytes(shape: list[int] | tuple[int, ...], dtype: str) -> int:
    """Bytes of a tensor, computed with Python integers (never overflows)."""
    return math.prod(shape) * itemsize(dtype)


@dataclass(frozen=True)
class EngineTensor(Record):
    name: str
    shape: list[int]
    dtype: str

    def check(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"tensor {self.name!r} has unsupported dtype {self.dtype!r}; an engine tensor has one "
                             f"of: {', '.join(DTYPES)}")
        if len(self.shape) > MAX_RANK:
            raise ValueError(f"tensor {self.name!r} has {len(self.shape)} dimensions; an engine tensor has at most "
                             f"{MAX_RANK}")
        if any(d < 0 for d in self.shape):
            raise ValueError(f"tensor {self.name!r} has a negative dimension in {self.shape}; dimensions are "
                             "non-negative")
        if any(d > MAX_DIM for d in self.shape):
            raise ValueError(f"tensor {self.name!r} has a dimension of 2**40 or more in {self.shape}; each "
                             f"dimension is at most {MAX_DIM}")
        nbytes = tensor_nbytes(self.shape, self.dtype)
        if nbytes > MAX_TENSOR_BYTES:
            raise ValueError(f"tensor {self.name!r} of shape {self.shape} ({self.dtype}) would take {nbytes} bytes; "
                             f"an engine tensor takes at most {MAX_TENSOR_BYTES} (2**62 - 1), so that sizes fit "
                             "in int64")


@dataclass(frozen=True)
class EngineWeight(EngineTensor):
    offset: Annotated[int, Bounds(ge=0, le=MAX_BYTES)]
    nbytes: Annotated[int, Bounds(ge=0, le=MAX_BYTES)]
    sha256: Annotated[str, Bounds(pattern=SHA256)]


@dataclass(frozen=True)
class EnginePinnedInput(EngineTensor):
    """A network input whose value was fixed at build time; the value is the weight of the same name."""

    sha256: Annotated[str, Bounds(pattern=SHA256)]


@dataclass(frozen=True)
class EngineLayer(Record):
    name: str
    op: str
    attrs: dict[str, EngineAttr]
    inputs: Annotated[list[str], Bounds(max_length=MAX_LAYER_TENSORS)]
    outputs: Annotated[list[str], Bounds(max_length=MAX_LAYER_TENSORS)]
    tactic: EngineTactic
    workspace_bytes: Annotated[int, Bounds(ge=0, le=MAX_BYTES)]


@dataclass(frozen=True)
class EngineAttribute(Record):
    """One attribute in an op's schema: its kind, and whether every layer of the op holds it."""

    kind: AttributeKind
    required: bool


@dataclass(frozen=True)
class EngineOpSchema(Record):
    """The attributes a layer of one op holds, as its op definition declares them (written by the builder from
    ``reprobuild.ops.layer_attributes.attribute_schema``), so that the loader checks a layer's attributes without
    the op definitions' attribute tables.

    ``closed``: the op declares its layers' attributes, so a layer holds every required one and no other. An open
    schema (a plugin's op that rewrites its attributes and declares none) gives only the kinds of the attributes
    its op knows, and requires none: the op's type inference names what it reads and the layer lacks.
    ``names_allowed``: an "int" attribute may hold a name instead (an op that canonicalizes an ONNX enum, such as
    Cast's ``to``, into its name)."""

    attributes: Annotated[dict[Annotated[str, Bounds(pattern=SCHEMA_NAME)], EngineAttribute],
                          Bounds(max_length=MAX_OP_ATTRIBUTES)]
    closed: bool
    names_allowed: bool

    def check(self) -> None:
        required = sorted(name for name, a in self.attributes.items() if a.required)
        if required and not self.closed:
            raise ValueError(f"an open attribute schema (closed false) requires no attribute; this one requires "
                             f"{required[:5]}")


@dataclass(frozen=True)
class EngineMemory(Record):
    alignment: Annotated[int, Bounds(ge=1, le=MAX_ALIGNMENT)]
    activation_bytes: Annotated[int, Bounds(ge=0, le=MAX_BYTES)]
    workspace_offset: Annotated[int, Bounds(ge=0, le=MAX_BYTES)]
    workspace_bytes: Annotated[int, Bounds(ge=0, le=MAX_BYTES)]
    library_bytes: Annotated[int, Bounds(ge=0, le=MAX_BYTES)]
    offsets: Annotated[dict[str, int], Bounds(max_length=MAX_TENSORS)]

    def check(self) -> None:
        if self.alignment & (self.alignment - 1):
            raise ValueError(f"memory alignment {self.alignment} is not a power of two")
        bad = sorted(name for name, offset in self.offsets.items() if not 0 <= offset <= MAX_BYTES)
        if bad:
            raise ValueError(f"memory offsets of {bad[:5]} are outside [0, {MAX_BYTES}]")
        total = self.workspace_offset + self.workspace_bytes + self.library_bytes
        if total > MAX_BYTES:
            raise ValueError(f"the memory plan needs {total} bytes per context; the most an engine may record is "
                             f"{MAX_BYTES}")


#: The most dynamic dimensions and optimization profiles one engine may have.
MAX_SYMBOLS = 64
MAX_PROFILES = 64
#: A dynamic dimension's symbol, and a size written as an expression of symbols (``reprobuild.core.symbolic``).
SYMBOL_NAME = r"^[A-Za-z_][A-Za-z0-9_.:]{0,127}$"
MAX_EXPRESSION = 1024
SymbolicSize = int | Annotated[str, Bounds(pattern=r"^[^\x00-\x1f\x7f]{1,1024}$")]


@dataclass(frozen=True)
class EngineProfile(Record):
    """One optimization profile: the [min, opt, max] shape of each run-time input with dynamic dimensions, and
    the tactic of each layer (in the order of the header's layers) chosen for it: timed at opt, checked at min and
    max."""

    inputs: Annotated[dict[str, Annotated[list[list[int]], Bounds(max_length=3)]], Bounds(max_length=MAX_BINDINGS)]
    tactics: Annotated[list[EngineTactic], Bounds(max_length=MAX_LAYERS)]


@dataclass(frozen=True)
class EngineDynamic(Record):
    """What makes an engine dynamic (built with optimization profiles). The header's tensors, attributes and
    tactics are the engine at profile 0's opt shapes, validated as any engine's; this says what they are at every
    size: each dynamic dimension's symbol and range, the shape of every activation and the attributes of every
    layer that depend on them (as expressions, ``reprobuild.core.symbolic.parse``), and each profile."""

    symbols: Annotated[dict[Annotated[str, Bounds(pattern=SYMBOL_NAME)], Annotated[list[int], Bounds(max_length=2)]],
                       Bounds(max_length=MAX_SYMBOLS)]
    shapes: Annotated[dict[str, Annotated[list[SymbolicSize], Bounds(max_length=MAX_RANK)]],
                      Bounds(max_length=MAX_TENSORS)]
    attrs: Annotated[dict[str, dict[str, SymbolicSize | list[SymbolicSize]]], Bounds(max_length=MAX_LAYERS)]
    profiles: Annotated[list[EngineProfile], Bounds(max_length=MAX_PROFILES)]

    def check(self) -> None:
        if not self.symbols or not self.profiles:
            raise ValueError("a dynamic engine has at least one dynamic dimension and one optimization profile")
        for name, bounds in self.symbols.items():
            if len(bounds) != 2 or not 1 <= bounds[0] <= bounds[1] <= MAX_DIM:
                raise ValueError(f"dynamic dimension {name!r} has the range {bounds}; a range is [lowest, highest] "
                                 f"with 1 <= lowest <= highest <= {MAX_DIM}")


@dataclass(frozen=True)
class EngineHeader(Record):
    format: Literal["reprobuild-engine"]
    backend: Literal["cpu", "cuda"]
    name: str
    inputs: Annotated[list[EngineTensor], Bounds(max_length=MAX_BINDINGS)]
    pinned_inputs: Annotated[list[EnginePinnedInput], Bounds(max_length=MAX_BINDINGS)]
    outputs: Annotated[list[EngineTensor], Bounds(max_length=MAX_BINDINGS)]
    activations: Annotated[list[EngineTensor], Bounds(max_length=MAX_TENSORS)]
    layers: Annotated[list[EngineLayer], Bounds(max_length=MAX_LAYERS)]
    #: Each op the layers use -> the attributes its layers hold (format 6): what the loader checks them against.
    attribute_schemas: Annotated[dict[Annotated[str, Bounds(pattern=SCHEMA_NAME)], EngineOpSchema],
                                 Bounds(max_length=MAX_LAYERS)]
    weights: Annotated[list[EngineWeight], Bounds(max_length=MAX_WEIGHTS)]
    memory: EngineMemory
    buffer_nbytes: Annotated[int, Bounds(ge=0, le=MAX_BYTES)]
    #: Whether contexts capture their run into a CUDA graph by default (the build asked for it and every chosen
    #: tactic is capturable).
    cuda_graph: bool
    manifest: bytes
    manifest_sha256: Annotated[str, Bounds(pattern=SHA256)]
    #: Each run-time input's shape as the model declared it (an int per static dimension, the symbol of a dynamic
    #: one): what a run with another shape is advised to do. Empty for a network built in code.
    declared_inputs: Annotated[dict[str, list[int | str]], Bounds(max_length=MAX_BINDINGS)] = field(
        default_factory=dict)
    #: An engine built with optimization profiles: one EngineDynamic (absent from the file for a fixed-shape one).
    dynamic: Annotated[list[EngineDynamic], Bounds(max_length=1)] = field(default_factory=list)

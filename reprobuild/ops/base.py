"""What an op is, in one place: :class:`OpDef`.

One definition per op (or per family of ops that differ only in a formula), after the onnx reference
evaluator's ``onnx/reference/ops/op_*.py``. A definition holds

- the ONNX **attributes** it understands, with defaults and the op versions that have them, and the op
  **versions** it implements (``since_version`` of each ONNX schema it covers). For an op that ONNX defines, the
  attributes come from ``onnx_attributes.json``, generated from ``onnx.defs`` (``python -m
  reprobuild.ops.onnx_schema``); a definition writes by hand only where it deliberately differs
  (``attribute_overrides``, ``checks_required``), and reprobuild's own ops write theirs in ``attributes``;
- ``convert``: how an ONNX node of any of those versions becomes one canonical IR layer: defaults filled in,
  axes made non-negative, inputs that decide shapes (Reshape's shape, Slice's starts, ReduceSum's axes in
  opset 13+) moved into attributes. The builder and the runtime never see ONNX defaults or version forms;
- ``infer``: output shapes **and dtypes** from the canonical attributes and the input types;
- ``compute``: a reference implementation on an array module ``xp`` (NumPy, or CuPy on a GPU), used for
  constant folding, by the CPU reference tactic and by the generic CUDA tactic.

Nothing here imports onnx: the frontend hands ``convert`` a :class:`Node`, a small view of the ONNX node.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from reprobuild.core.dtypes import NUMERIC
from reprobuild.core.errors import ModelError, UnsupportedOpError
from reprobuild.ops.attr import ABSENT, REQUIRED, Attr
from reprobuild.ops.onnx_attributes import AttributeTableError, onnx_attributes


class OpError(ModelError):
    """A problem with one node or layer, raised without its location; the caller adds the node's name and op."""


class StaticInputError(ModelError):
    """An input that decides a shape (or is otherwise needed when the engine is built) is not a constant.

    ``inputs`` names the network inputs it is computed from: pinning their values at build time
    (``--input-value``, TensorRT's shape-input values) makes it a constant.
    """

    def __init__(self, message: str, inputs: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.inputs = tuple(inputs)


@dataclass(frozen=True)
class TensorType:
    """Shape and dtype of a tensor: what ``infer`` reads and returns."""

    shape: tuple[int, ...]
    dtype: str

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


AttrValue = int | float | str | tuple[int, ...] | tuple[float, ...] | tuple[str, ...]
Attrs = Mapping[str, Any]


class Node(Protocol):
    """The frontend's view of one ONNX node while it is converted (see ``frontend/onnx``)."""

    name: str
    op_type: str
    #: the model's opset for this node's domain, and the op version it resolves to (a ``since_version``)
    opset: int
    version: int

    def attr(self, key: str) -> Any:
        """The attribute's value (its default when the node leaves it out), or ``ABSENT``."""

    def has_attr(self, key: str) -> bool: ...

    @property
    def num_inputs(self) -> int:
        """Inputs the node lists, trailing omitted ones dropped."""

    def input(self, i: int) -> TensorType | None:
        """Type of input ``i``; None when omitted (an empty name) or beyond the last."""

    def const(self, i: int) -> np.ndarray | None:
        """Value of input ``i`` when it is known at build time (a constant, or computed from constants)."""

    def static(self, i: int, what: str) -> np.ndarray:
        """Value of input ``i``, which must be known at build time; a StaticInputError naming what it is for."""

    @property
    def num_outputs(self) -> int: ...

    def output_used(self, i: int) -> bool:
        """Whether output ``i`` is listed and read by something (another node or the graph's outputs)."""

    def fail(self, message: str) -> UnsupportedOpError: ...

    def emit(self, attrs: Attrs, inputs: Sequence[int] | None = None, n_outputs: int | None = None,
             op: str | None = None, outputs: Sequence[int] | None = None) -> None:
        """Add the canonical layer: ``inputs`` are node input positions (default: every present input, in
        order), ``n_outputs`` how many outputs it has (default: all the node lists), ``op`` another op to emit
        (default: this one). ``outputs`` picks node output positions instead of the first ``n_outputs`` (for
        ops whose used outputs are not a prefix); the layer's outputs are then those, in that order."""

    def define_constant(self, value: np.ndarray, output: int = 0) -> None:
        """Make output ``output`` a constant (the node computes nothing at run time)."""


class OpDef:
    """Base of every op definition. Subclasses set the class attributes and implement ``infer`` and
    ``compute``; ``convert`` has a default that fits ops whose ONNX form is already canonical."""

    op: ClassVar[str]
    domain: ClassVar[str] = ""
    #: ONNX ``since_version`` of each schema this definition implements. A node whose op version (in the
    #: model's opset) is not listed is refused, naming the versions that are.
    versions: ClassVar[tuple[int, ...]]
    #: The attributes of every version, by name. Derived for an op that ONNX defines (the generated table, see
    #: ``onnx_attributes``, then ``checks_required`` and ``attribute_overrides``); written here by hand only for
    #: reprobuild's own ops (internal ones, another domain's, an op ONNX does not define).
    attributes: ClassVar[Mapping[str, Attr]] = {}
    #: Where a definition deliberately differs from ``onnx.defs``, the attribute as it is meant (each with a comment
    #: saying why): it replaces the table's.
    attribute_overrides: ClassVar[Mapping[str, Attr]] = {}
    #: Attributes ONNX requires that ``convert`` checks itself, with a message of its own that says what to give:
    #: declared without a default (``ABSENT``) so that the frontend's generic "is required" does not come first.
    checks_required: ClassVar[tuple[str, ...]] = ()
    #: (fewest, most) inputs; None for "no limit" (variadic).
    num_inputs: ClassVar[tuple[int, int | None]] = (1, 1)
    num_outputs: ClassVar[tuple[int, int]] = (1, 1)
    #: dtypes of the ``T`` inputs (``check_types`` tests input 0 and every input listed in ``same_type``).
    dtypes: ClassVar[tuple[str, ...]] = NUMERIC
    #: Input positions that must have input 0's dtype.
    same_type: ClassVar[tuple[int, ...]] = ()
    #: Version of the reference ``compute``: bump it whenever what ``compute`` returns changes. The reference
    #: tactics record it, so a pinned engine never silently gets a different reference. Their identity covers the
    #: definition's whole class, so any change to the class's code needs a bump too (the versions that came with
    #: moving ONNX attributes into ``onnx_attributes.json`` changed no computation).
    version: ClassVar[int] = 1
    #: For an op that never becomes a layer of its own (Dropout, CastLike, Upsample, ...), the op ``convert``
    #: emits instead; such an op has no tactics.
    lowered_to: ClassVar[str | None] = None
    #: Whether ``compute`` with CuPy gives the same bits run after run on one device (no atomics, no
    #: data-dependent reduction order); the CUDA reference tactic declares its determinism from it.
    cuda_deterministic: ClassVar[bool] = True
    #: An op of reprobuild's own that only graph passes create (a fused layer), never an ONNX node: the ONNX
    #: frontend refuses a node that names it.
    internal: ClassVar[bool] = False
    #: The ops ``compute`` looks up in the registry by a name computed at run time (a FusedElementwise step's op):
    #: the reference tactics' identity covers their definitions too.
    ops_by_name: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Derive ``attributes`` from the ONNX table for an op that ONNX defines and whose class does not write
        them itself."""
        super().__init_subclass__(**kwargs)
        op, versions = getattr(cls, "op", None), getattr(cls, "versions", None)
        if "attributes" in cls.__dict__ or op is None or versions is None or cls.internal or cls.domain:
            return
        try:
            derived = onnx_attributes(op, versions, set(cls.attribute_overrides))
        except AttributeTableError:
            if cls.__module__.startswith("reprobuild."):
                raise  # a built-in op the table does not cover: regenerate the table
            return  # a class of another package (a plugin's draft) keeps the attributes it inherits
        if derived is None:
            return
        for key in cls.checks_required:
            spec = derived[key]
            derived[key] = Attr(spec.kind, ABSENT if spec.default is REQUIRED else spec.default, spec.since,
                                spec.until)
        cls.attributes = {**derived, **cls.attribute_overrides}

    # --- the frontend side -------------------------------------------------------------------------------------

    def convert(self, node: Node) -> None:
        """Emit the canonical layer. Default: every attribute this version has, defaults filled, and every input
        the node lists; ``canonical_attrs`` may adjust the attributes (resolve axes, add static inputs)."""
        node.emit(self.canonical_attrs(node, self.node_attrs(node)))

    def node_attrs(self, node: Node) -> dict[str, Any]:
        """Every attribute the node's op version has, with defaults filled in; ABSENT ones left out."""
        out = {}
        for key in sorted(self.attributes):
            if self.attributes[key].exists_in(node.version):
                value = node.attr(key)
                if value is not ABSENT:
                    out[key] = value
        return out

    def canonical_attrs(self, node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
        return attrs

    # --- the IR side -------------------------------------------------------------------------------------------

    @abstractmethod
    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        """Output types from the canonical attributes and the input types; an OpError when they do not fit."""

    @abstractmethod
    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        """The outputs, computed with the array module ``xp`` (numpy or cupy) from inputs of that module."""

    def check_constants(self, attrs: Attrs, inputs: Sequence[TensorType], constants: Mapping[int, Any]) -> None:
        """Check the values of the inputs known before the run (``constants``: input position -> host array; an
        engine's weights, a model's constants) that the run indexes with, such as Gather's indices: an OpError
        for one out of range. The engine loader calls it before any layer runs, the frontend as it adds a layer.
        Default: nothing to check."""

    # --- helpers for subclasses --------------------------------------------------------------------------------

    def check_types(self, inputs: Sequence[TensorType]) -> None:
        """Input 0 has one of ``dtypes``; every input in ``same_type`` has input 0's dtype."""
        if inputs and inputs[0].dtype not in self.dtypes:
            raise OpError(f"input 0 has dtype {inputs[0].dtype}; {self.op} supports {', '.join(self.dtypes)}")
        for i in self.same_type:
            if i < len(inputs) and inputs[i].dtype != inputs[0].dtype:
                raise OpError(f"input {i} has dtype {inputs[i].dtype} but input 0 has {inputs[0].dtype}; "
                              f"{self.op} needs them equal")

    @property
    def layer_op(self) -> str:
        """The op as IR layers, engines and manifests name it: ``op`` in the default domain, ``domain::op`` in
        another (a plugin's), so that a plugin op never shadows a default-domain op of the same name."""
        return f"{self.domain}::{self.op}" if self.domain else self.op

    def __repr__(self) -> str:
        return f"<op {self.op} (versions {', '.join(map(str, self.versions))})>"


class BuildTimeOp(OpDef):
    """An op whose outputs are known when the network is parsed (Constant, Shape, ...): ``convert`` defines them
    as constants, so no layer, shape function or kernel ever sees it."""

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        raise OpError(f"{self.op} is computed when the network is parsed and never becomes a layer")

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        raise OpError(f"{self.op} is computed when the network is parsed and never becomes a layer")


def axis_in_range(axis: int, rank: int, what: str = "axis") -> int:
    """``axis`` made non-negative; an OpError when it is outside [-rank, rank)."""
    if not -rank <= axis < rank:
        raise OpError(f"{what} {axis} is out of range for rank {rank}")
    return axis % rank


def axes_in_range(axes: Sequence[int], rank: int, what: str = "axes") -> tuple[int, ...]:
    resolved = tuple(axis_in_range(int(a), rank, what) for a in axes)
    if len(set(resolved)) != len(resolved):
        raise OpError(f"{what} {list(axes)} repeat an axis")
    return resolved


def broadcast(*shapes: Sequence[int]) -> tuple[int, ...]:
    """NumPy (multidirectional) broadcasting, as ONNX defines it; an OpError when the shapes do not broadcast."""
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*(tuple(s) for s in shapes)))
    except ValueError:
        raise OpError(f"input shapes {[list(s) for s in shapes]} do not broadcast (numpy rules)") from None


def ints(value: Any) -> tuple[int, ...]:
    """An attribute or a constant as a tuple of Python ints."""
    return tuple(int(v) for v in np.asarray(value).reshape(-1))


def floats(value: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(value, dtype=np.float64).reshape(-1))


def scalar(value: Any) -> Any:
    """A one-element constant as a Python scalar (int for integers and bools, float for floats)."""
    arr = np.asarray(value).reshape(-1)
    if arr.size != 1:
        raise OpError(f"expected a single value, got {arr.size}")
    v = arr[0]
    if arr.dtype.kind in "biu":
        return int(v)
    return float(v)

"""What an op is, in one place: :class:`OpDef`, a layer definition plus its ONNX half.

One definition per op (or per family of ops that differ only in a formula), after the onnx reference
evaluator's ``onnx/reference/ops/op_*.py``. What a *layer* of the op is (type inference, constant checks, the
reference computation) is its :class:`~reprobuild.layers.base.LayerDef`, in :mod:`reprobuild.layers`, which the
runtime imports; an ``OpDef`` subclasses it and adds how an ONNX node becomes that layer:

- the ONNX **attributes** it understands, with defaults and the op versions that have them, and the op
  **versions** it implements (``since_version`` of each ONNX schema it covers). For an op that ONNX defines, the
  attributes come from ``onnx_attributes.json``, generated from ``onnx.defs`` (``python -m
  reprobuild.ops.onnx_schema``); a definition writes by hand only where it deliberately differs
  (``attribute_overrides``, ``checks_required``), and reprobuild's own ops write theirs in ``attributes``;
- ``convert``: how an ONNX node of any of those versions becomes one canonical IR layer: defaults filled in,
  axes made non-negative, inputs that decide shapes (Reshape's shape, Slice's starts, ReduceSum's axes in
  opset 13+) moved into attributes. The builder and the runtime never see ONNX defaults or version forms.

A built-in op's two halves live in modules of the same name: ``reprobuild/layers/op_conv.py`` defines the ``Conv``
layer, ``reprobuild/ops/op_conv.py`` the ``Conv`` op as ``class Conv(OpDef, layer.Conv)`` with its ONNX versions
and conversion. A plugin's op is one class with both halves.

Nothing here imports onnx: the frontend hands ``convert`` a :class:`Node`, a small view of the ONNX node.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol

import numpy as np

from reprobuild.core.errors import ModelError, UnsupportedOpError
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType
from reprobuild.ops.attr import ABSENT, REQUIRED, Attr
from reprobuild.ops.onnx_attributes import AttributeTableError, onnx_attributes


class StaticInputError(ModelError):
    """An input that decides a shape (or is otherwise needed when the engine is built) is not a constant.

    ``inputs`` names the network inputs it is computed from: pinning their values at build time
    (``--input-value``, TensorRT's shape-input values) makes it a constant.
    """

    def __init__(self, message: str, inputs: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.inputs = tuple(inputs)


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


class OpDef(LayerDef):
    """Base of every op definition: a layer definition (``infer``, ``compute``: see ``LayerDef``) and its ONNX
    half. ``convert`` has a default that fits ops whose ONNX form is already canonical. A built-in op's class is
    ``class Op(OpDef, layer.Op)``: OpDef first, so that the ONNX half comes before the layer's in the MRO, and OpDef
    sets nothing a layer sets (``op``, ``domain``, ``dtypes``, ``version``, ...)."""

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
    #: For an op that never becomes a layer of its own (Dropout, CastLike, Upsample, ...), the op ``convert``
    #: emits instead; such an op has no tactics.
    lowered_to: ClassVar[str | None] = None
    #: An op of reprobuild's own that only graph passes create (a fused layer), never an ONNX node: the ONNX
    #: frontend refuses a node that names it.
    internal: ClassVar[bool] = False

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

    def __repr__(self) -> str:
        return f"<op {self.op} (versions {', '.join(map(str, self.versions))})>"


class BuildTimeOp(OpDef):
    """An op whose outputs are known when the network is parsed (Constant, Shape, ...): ``convert`` defines them
    as constants, so no layer, shape function or kernel ever sees it."""

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        raise OpError(f"{self.op} is computed when the network is parsed and never becomes a layer")

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        raise OpError(f"{self.op} is computed when the network is parsed and never becomes a layer")

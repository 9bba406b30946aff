"""What a layer is, in one place: :class:`LayerDef`, the runtime half of an op.

A layer definition is what an engine needs of its op to load and run: the **type inference** (output shapes and
dtypes from the canonical attributes and the input types; the loader checks every layer of a file through it), the
**constant checks** (the values of weights the run indexes with), and the **reference computation** on an array
module ``xp`` (NumPy, or CuPy on a GPU), which the reference tactics run, and constant folding too. One module per op
family (``op_*.py``, listed in ``_layer_list.py``), each with a ``LAYERS`` tuple.

How an ONNX node *becomes* a layer (the ONNX versions an op implements, their attributes from ``onnx.defs``, the
conversion to the canonical form) is the op definition's job, in :mod:`reprobuild.ops`: an ``OpDef`` is a
``LayerDef`` plus that ONNX half. A runtime imports this package and never ``reprobuild.ops``; the attribute schema
of each layer, which the op definition declares, travels in the engine file.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from reprobuild.core.dtypes import NUMERIC
from reprobuild.core.errors import ModelError


class OpError(ModelError):
    """A problem with one node or layer, raised without its location; the caller adds the node's name and op."""


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


class LayerDef:
    """Base of every layer definition. Subclasses set ``op`` and the class attributes, and implement ``infer`` and
    ``compute``."""

    op: ClassVar[str]
    domain: ClassVar[str] = ""
    #: (fewest, most) inputs; None for "no limit" (variadic).
    num_inputs: ClassVar[tuple[int, int | None]] = (1, 1)
    num_outputs: ClassVar[tuple[int, int]] = (1, 1)
    #: dtypes of the ``T`` inputs (``check_types`` tests input 0 and every input listed in ``same_type``).
    dtypes: ClassVar[tuple[str, ...]] = NUMERIC
    #: Input positions that must have input 0's dtype.
    same_type: ClassVar[tuple[int, ...]] = ()
    #: Version of the reference ``compute``: bump it whenever what ``compute`` returns changes. The reference
    #: tactics record it, so a pinned engine never silently gets a different reference. Their identity covers the
    #: layer definition's whole class, so any change to the class's code needs a bump too.
    version: ClassVar[int] = 1
    #: Whether ``compute`` with CuPy gives the same bits run after run on one device (no atomics, no
    #: data-dependent reduction order); the CUDA reference tactic declares its determinism from it.
    cuda_deterministic: ClassVar[bool] = True
    #: The ops ``compute`` looks up in the registry by a name computed at run time (a FusedElementwise step's op):
    #: the reference tactics' identity covers their definitions too.
    ops_by_name: ClassVar[tuple[str, ...]] = ()

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
        return f"<layer {self.layer_op} (reference v{self.version})>"


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

"""Size limits for what the network may hold, checked before anything is allocated.

- :data:`MAX_RANK`: the most dimensions a tensor may have (numpy's old ``NPY_MAXDIMS``; the engine format, the
  planners and the kernels assume it).
- Every element count and byte size must fit an int64 (shapes are int64 everywhere: in numpy, in the engine
  file, in the kernels' strides).
- :data:`MAX_BUILD_CONSTANT_BYTES`: the most bytes one constant *made while the network is built* may take:
  ConstantOfShape, Range, EyeLike, the signal windows, NonZero, Dropout's mask, and a Constant node's value.
  Such a value is held in host memory during the build and stored in the engine file, and a few bytes of model
  (a ConstantOfShape of shape [100000, 100000]) could otherwise ask for tens of gigabytes. Weights stored in
  the model (initializers) are bounded by the model file's own limit instead.

A tensor over these limits is refused with a :class:`~reprobuild.core.errors.ResourceError` (exit 13) that names the
node, the bytes it would need and the limit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from reprobuild.core import symbolic
from reprobuild.core.dtypes import np_dtype
from reprobuild.core.errors import ResourceError

#: The most dimensions a tensor may have.
MAX_RANK = 32


#: The largest element count and byte size a tensor may have (shapes and offsets are int64).
INT64_MAX = 2**63 - 1


#: The most bytes one constant made while the network is built may take (1 GiB): see the module's docstring.
MAX_BUILD_CONSTANT_BYTES = 1 << 30


def gib(nbytes: int) -> str:
    """A byte count for people: '37.25 GiB', '12 bytes'."""
    if nbytes < 1024:
        return f"{nbytes} bytes"
    for unit, scale in (("EiB", 1 << 60), ("PiB", 1 << 50), ("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20)):
        if nbytes >= scale:
            return f"{nbytes / scale:.4g} {unit}"
    return f"{nbytes / 1024:.4g} KiB"


def shape_problem(shape: Sequence[int], itemsize: int) -> str | None:
    """Why a tensor of this shape (with elements of ``itemsize`` bytes) cannot be represented, or None.

    Checked with Python integers, before anything is allocated: more than MAX_RANK dimensions, or an element
    count (zero dimensions left out, so that strides fit too) or byte size beyond int64."""
    if len(shape) > MAX_RANK:
        return f"it has {len(shape)} dimensions; reprobuild supports at most {MAX_RANK}"
    count = math.prod(max(symbolic.upper(d), 1) for d in shape)  # a dynamic size at its largest
    if count > INT64_MAX:
        return f"it would hold {count} elements, more than an int64 can count ({INT64_MAX})"
    if count * itemsize > INT64_MAX:
        return (f"it would take {count * itemsize} bytes ({count} elements of {itemsize} bytes), more than an int64 "
                f"can count ({INT64_MAX})")
    return None


def check_constant_size(node: object, shape: Sequence[int], dtype: str | np.dtype, what: str = "its output") -> None:
    """Refuse, before allocating it, a constant the node would make at build time that is over the limits.

    ``node`` is the op's :class:`~reprobuild.ops.Node` (its ``name`` and ``op_type`` locate the error);
    ``dtype`` a reprobuild dtype name or a numpy dtype."""
    itemsize = int(np_dtype(dtype).itemsize if isinstance(dtype, str) else np.dtype(dtype).itemsize)
    _check(node, [int(d) for d in shape], itemsize, str(dtype), what)


def check_constant_value(node: object, value: np.ndarray, what: str = "its output") -> None:
    """The same limits for a value that already exists (a Constant node's tensor): it is not kept when it is
    over them."""
    _check(node, [int(d) for d in value.shape], int(value.dtype.itemsize), str(value.dtype), what)


def _check(node: object, dims: list[int], itemsize: int, dtype: str, what: str) -> None:
    where = f"node {getattr(node, 'name', '?')!r} (op {getattr(node, 'op_type', '?')})"
    problem = shape_problem(dims, itemsize)
    if problem is not None:
        shown = dims if len(dims) <= 40 else [*dims[:40], "..."]
        raise ResourceError(f"{where}: {what} (shape {shown}, {dtype}) cannot be made when the engine is built: "
                            f"{problem}; check the shape the node is given")
    nbytes = math.prod(dims) * itemsize
    if nbytes > MAX_BUILD_CONSTANT_BYTES:
        raise ResourceError(
            f"{where}: {what} (shape {dims}, {dtype}) would need {nbytes} bytes ({gib(nbytes)}) when the engine is "
            f"built; the limit for a constant made at build time is {MAX_BUILD_CONSTANT_BYTES} bytes "
            f"({gib(MAX_BUILD_CONSTANT_BYTES)}, reprobuild.ops._constant_limits.MAX_BUILD_CONSTANT_BYTES). Check the "
            "shape or sizes the node is given; a constant this large belongs in the model's weights (an "
            "initializer) or must be computed at run time")

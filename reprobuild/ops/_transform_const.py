"""Range and EyeLike: ops whose output is known when the network is parsed, so they become constants.

EyeLike reads only its input's shape and dtype. Range needs ``start``, ``limit`` and ``delta`` at build time
(its output's length depends on them); they are pinned like any shape input when they are network inputs.

Range computes exactly what onnx's reference does (``np.arange`` on the Python values, then a cast; float16
and bfloat16 from version 27 go through ``stash_type``'s float32 or float64), the integer types with exact
Python integers. ``delta`` = 0 and non-finite values are refused.
"""

from __future__ import annotations

import math

import numpy as np

from reprobuild.core import symbolic
from reprobuild.core.dtypes import np_dtype
from reprobuild.core.symbolic import SymInt
from reprobuild.layers import op_transform as layer
from reprobuild.layers.base import OpError, scalar
from reprobuild.ops._constant_limits import check_constant_size
from reprobuild.ops.base import BuildTimeOp, Node, OpDef
from reprobuild.ops.onnx_types import dtype_of_elem_type

RANGE_TYPES = ("float16", "bfloat16", "float32", "float64", "int16", "int32", "int64")


_STASH = {1: np.float32, 11: np.float64}


def _check_size(node: Node, count: int, dtype: str) -> None:
    """A ResourceError before allocating an output of ``count`` elements over the build-time constant limit
    (reprobuild.ops._constant_limits.MAX_BUILD_CONSTANT_BYTES)."""
    check_constant_size(node, (count,), dtype)


def _one(node: Node, value: np.ndarray) -> int | SymInt:
    items = symbolic.sizes(value)
    if len(items) != 1:
        raise node.fail(f"start, limit and delta must be scalars; got {len(items)} values")
    return items[0]


class Range(OpDef, layer.Range):
    """Folded into a constant, except an integer Range whose start, limit or delta is a size of a dynamic axis,
    which becomes the :class:`reprobuild.layers.op_transform.Range` layer."""

    versions = (11, 27)
    num_inputs = (3, 3)

    def convert(self, node: Node) -> None:
        types = [node.input(i) for i in range(3)]
        dtype = types[0].dtype if types[0] is not None else "?"
        if dtype not in RANGE_TYPES or any(t is None or t.dtype != dtype for t in types):
            raise node.fail(f"start, limit and delta must share one of the types {', '.join(RANGE_TYPES)}; got "
                            f"{', '.join(t.dtype if t else 'none' for t in types)}")
        values = [node.static(i, what) for i, what in enumerate(("start", "limit", "delta"))]
        if any(symbolic.is_symbolic(v) for v in values):  # arange(sequence): a layer, computed at run time
            first, last, step = (_one(node, v) for v in values)
            if step == 0:
                raise node.fail("delta must be non-zero")
            count = -((first - last) // step)
            _check_size(node, symbolic.upper(count), dtype)
            node.emit({"start": first, "limit": last, "delta": step, "dtype": dtype}, inputs=[])
            return
        start, limit, delta = (scalar(v) for v in values)
        if not all(math.isfinite(v) for v in (start, limit, delta)) or delta == 0:
            raise node.fail(f"start, limit and delta must be finite and delta non-zero; got {start}, {limit}, "
                            f"{delta}")
        if dtype.startswith("int"):
            count = max(-((start - limit) // delta), 0)  # ceil((limit - start) / delta), exactly
            _check_size(node, count, dtype)
            with np.errstate(over="ignore"):  # wraps only in i * delta; each start + i * delta fits the type
                steps = np.arange(count, dtype=np.int64) * np.int64(delta)
                value = (steps + np.int64(start)).astype(np_dtype(dtype))
        else:
            steps = (limit - start) / delta
            if not math.isfinite(steps):
                raise node.fail(f"({limit} - {start}) / {delta} elements overflow a float64")
            count = max(math.ceil(steps), 0)
            _check_size(node, count, dtype)
            stash = int(node.attr("stash_type")) if node.version >= 27 else None
            if stash is not None and dtype in ("float16", "bfloat16"):
                if stash not in _STASH:
                    raise node.fail(f"stash_type {stash} is not supported; use 1 (float) or 11 (double)")
                value = np.arange(float(start), float(limit), float(delta), dtype=_STASH[stash])
            else:
                value = np.arange(float(start), float(limit), float(delta))
            value = value.astype(np_dtype(dtype))
        node.define_constant(value.reshape(-1))


class EyeLike(BuildTimeOp):
    op, versions = "EyeLike", (9, 22)

    def convert(self, node: Node) -> None:
        x = node.input(0)
        assert x is not None
        if x.rank != 2:
            raise node.fail(f"needs a 2-D input; got shape {list(x.shape)}")
        try:
            dtype = dtype_of_elem_type(int(node.attr("dtype")), "the output") if node.has_attr("dtype") else x.dtype
        except OpError as exc:
            raise node.fail(str(exc)) from None
        check_constant_size(node, x.shape, dtype)
        node.define_constant(np.eye(x.shape[0], x.shape[1], int(node.attr("k")), dtype=np_dtype(dtype)))

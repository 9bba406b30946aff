"""One converter per supported ONNX op: validate the node's attributes and emit a normalized IR layer.

The table ``CONVERTERS`` is the list of supported ONNX ops. Each entry names the attributes it understands;
any other attribute, or an unsupported value, is an error that names the node, the op and what is supported.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from reprobuild.errors import UnsupportedOpError

if TYPE_CHECKING:
    from reprobuild.frontend.onnx_parser import NodeContext

Converter = Callable[["NodeContext"], None]


@dataclass(frozen=True)
class OpSupport:
    attributes: frozenset[str]
    convert: Converter


def _ints(ctx: NodeContext, key: str, default: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(v) for v in ctx.attrs.get(key, default))


def _window_attrs(ctx: NodeContext, kernel: Sequence[int], with_dilations: bool = True) -> dict[str, Any]:
    """Resolve pads (auto_pad included), strides and dilations of a 2-D sliding window to explicit values."""
    x = ctx.input_info(0).shape
    if len(x) != 4:
        raise ctx.fail(f"only 2-D windows over a rank-4 (N, C, H, W) input are supported; input is {list(x)}")
    if len(kernel) != 2:
        raise ctx.fail(f"kernel_shape {list(kernel)} is not 2-D; only 2-D windows are supported")
    strides = _ints(ctx, "strides", (1, 1))
    dilations = _ints(ctx, "dilations", (1, 1))
    if not with_dilations and dilations != (1, 1):
        raise ctx.fail(f"dilations {list(dilations)} are not supported for this op; only [1, 1]")
    auto_pad = ctx.attrs.get("auto_pad", "NOTSET")
    if auto_pad == "NOTSET":
        pads = _ints(ctx, "pads", (0, 0, 0, 0))
    elif auto_pad == "VALID":
        pads = (0, 0, 0, 0)
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for i in range(2):
            out = math.ceil(x[2 + i] / strides[i])
            total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - x[2 + i])
            small, large = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else large)
            end.append(large if auto_pad == "SAME_UPPER" else small)
        pads = (begin[0], begin[1], end[0], end[1])
    else:
        raise ctx.fail(f"auto_pad={auto_pad!r} is not supported; use NOTSET, VALID, SAME_UPPER or SAME_LOWER")
    for name, values, n in (("pads", pads, 4), ("strides", strides, 2), ("dilations", dilations, 2)):
        if len(values) != n:
            raise ctx.fail(f"{name} {list(values)} should have {n} values for a 2-D window")
    if min(strides) < 1 or min(dilations) < 1 or min(pads) < 0 or min(kernel) < 1:
        raise ctx.fail(f"invalid window: kernel {list(kernel)}, strides {list(strides)}, pads {list(pads)}, "
                       f"dilations {list(dilations)}")
    attrs: dict[str, Any] = {"kernel_shape": tuple(kernel), "pads": pads, "strides": strides}
    if with_dilations:
        attrs["dilations"] = dilations
    return attrs


def conv(ctx: NodeContext) -> None:
    if ctx.const(1) is None:
        raise ctx.fail("the weight (input 1) must be a constant (initializer); runtime weights are not supported")
    w = ctx.input_info(1).shape
    kernel = _ints(ctx, "kernel_shape", w[2:])
    if tuple(kernel) != tuple(w[2:]):
        raise ctx.fail(f"kernel_shape {list(kernel)} does not match the weight's spatial shape {list(w[2:])}")
    attrs = _window_attrs(ctx, kernel)
    attrs["group"] = int(ctx.attrs.get("group", 1))
    del attrs["kernel_shape"]
    ctx.emit("Conv", attrs)


def gemm(ctx: NodeContext) -> None:
    if int(ctx.attrs.get("broadcast", 1)) != 1:
        raise ctx.fail("broadcast=0 (opset < 7) is not supported")
    ctx.emit("Gemm", {
        "alpha": float(ctx.attrs.get("alpha", 1.0)),
        "beta": float(ctx.attrs.get("beta", 1.0)),
        "transA": int(ctx.attrs.get("transA", 0)),
        "transB": int(ctx.attrs.get("transB", 0)),
    })


def binary(ctx: NodeContext) -> None:
    if "axis" in ctx.attrs or int(ctx.attrs.get("broadcast", 0)) not in (0, 1):
        raise ctx.fail("legacy broadcasting with an axis (opset < 7) is not supported; re-export with opset >= 7")
    ctx.emit(ctx.node.op_type, {})


def plain(ctx: NodeContext) -> None:
    ctx.emit(ctx.node.op_type, {})


def batchnorm(ctx: NodeContext) -> None:
    if int(ctx.attrs.get("training_mode", 0)) or not int(ctx.attrs.get("is_test", 1)):
        raise ctx.fail("training mode is not supported; reprobuild builds inference engines")
    if int(ctx.attrs.get("spatial", 1)) != 1:
        raise ctx.fail("spatial=0 is not supported")
    if ctx.used_outputs() != 1:
        raise ctx.fail("only the first output (Y) may be used; running mean/variance outputs are training-only")
    for i in range(1, 5):
        if ctx.const(i) is None:
            raise ctx.fail(f"input {i} (scale, B, mean, var) must be a constant (initializer)")
    ctx.emit("BatchNormalization", {"epsilon": float(ctx.attrs.get("epsilon", 1e-5))}, n_outputs=1)


def maxpool(ctx: NodeContext) -> None:
    if int(ctx.attrs.get("storage_order", 0)) != 0:
        raise ctx.fail("storage_order=1 is not supported")
    if ctx.used_outputs() != 1:
        raise ctx.fail("the Indices output is not supported; only Y may be used")
    attrs = _window_attrs(ctx, _ints(ctx, "kernel_shape", ()))
    attrs["ceil_mode"] = int(ctx.attrs.get("ceil_mode", 0))
    ctx.emit("MaxPool", attrs, n_outputs=1)


def averagepool(ctx: NodeContext) -> None:
    attrs = _window_attrs(ctx, _ints(ctx, "kernel_shape", ()))
    attrs["ceil_mode"] = int(ctx.attrs.get("ceil_mode", 0))
    attrs["count_include_pad"] = int(ctx.attrs.get("count_include_pad", 0))
    ctx.emit("AveragePool", attrs)


def _axis(ctx: NodeContext, axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise ctx.fail(f"axis {axis} is out of range for rank {rank}")
    return axis % rank


def flatten(ctx: NodeContext) -> None:
    rank = len(ctx.input_info(0).shape)
    axis = int(ctx.attrs.get("axis", 1))
    if not -rank <= axis <= rank:
        raise ctx.fail(f"axis {axis} is out of range for rank {rank}")
    ctx.emit("Flatten", {"axis": axis + rank if axis < 0 else axis})


def reshape(ctx: NodeContext) -> None:
    shape = ctx.const(1)
    if shape is None:
        raise ctx.fail("the target shape (input 1) must be a constant; data-dependent reshapes are not supported")
    source = ctx.input_info(0).shape
    allowzero = int(ctx.attrs.get("allowzero", 0))
    dims = [int(d) for d in np.asarray(shape).reshape(-1)]
    resolved = [source[i] if d == 0 and not allowzero else d for i, d in enumerate(dims)]
    if resolved.count(-1) > 1:
        raise ctx.fail(f"target shape {dims} has more than one -1")
    if -1 in resolved:
        known = int(np.prod([d for d in resolved if d != -1], dtype=np.int64))
        total = int(np.prod(source, dtype=np.int64))
        if known == 0 or total % known:
            raise ctx.fail(f"cannot reshape {list(source)} to {dims}")
        resolved[resolved.index(-1)] = total // known
    ctx.emit("Reshape", {"shape": tuple(resolved)}, inputs=ctx.inputs[:1])


def concat(ctx: NodeContext) -> None:
    if "axis" not in ctx.attrs:
        raise ctx.fail("the axis attribute is required")
    ctx.emit("Concat", {"axis": _axis(ctx, int(ctx.attrs["axis"]), len(ctx.input_info(0).shape))})


def softmax(ctx: NodeContext) -> None:
    legacy = ctx.opset < 13  # opset < 13 flattens the input to 2-D at axis; 13+ normalizes along one axis
    rank = len(ctx.input_info(0).shape)
    axis = _axis(ctx, int(ctx.attrs.get("axis", 1 if legacy else -1)), rank)
    ctx.emit("Softmax", {"axis": axis, "coerce_2d": int(legacy)})


def dropout(ctx: NodeContext) -> None:
    if int(ctx.attrs.get("is_test", 1)) == 0:
        raise ctx.fail("is_test=0 (training) is not supported")
    if len(ctx.inputs) > 2:
        mode = ctx.const(2)
        if mode is None or bool(np.asarray(mode).reshape(-1)[0]):
            raise ctx.fail("training_mode must be a constant false; reprobuild builds inference engines")
    if ctx.used_outputs() != 1:
        raise ctx.fail("the mask output is not supported in inference; only the first output may be used")
    ctx.emit("Identity", {}, inputs=ctx.inputs[:1], n_outputs=1)


def identity(ctx: NodeContext) -> None:
    ctx.emit("Identity", {})


def constant(ctx: NodeContext) -> None:
    supported = ("value", "value_float", "value_floats", "value_int", "value_ints")
    keys = [k for k in ctx.attrs if k in supported]
    if len(keys) != 1:
        raise ctx.fail(f"needs exactly one of the attributes {', '.join(supported)}; got {sorted(ctx.attrs)}")
    value = ctx.attrs[keys[0]]
    if keys[0] in ("value_float", "value_floats"):
        value = np.asarray(value, dtype=np.float32)
    elif keys[0] in ("value_int", "value_ints"):
        value = np.asarray(value, dtype=np.int64)
    ctx.define_constant(np.asarray(value))


def constant_of_shape(ctx: NodeContext) -> None:
    shape = ctx.const(0)
    if shape is None:
        raise ctx.fail("the shape (input 0) must be a constant; data-dependent shapes are not supported")
    fill = np.asarray(ctx.attrs.get("value", np.zeros(1, dtype=np.float32))).reshape(-1)
    if fill.size != 1:
        raise ctx.fail(f"value must hold one element; it holds {fill.size}")
    dims = tuple(int(d) for d in np.asarray(shape).reshape(-1))
    if any(d < 0 for d in dims):
        raise ctx.fail(f"negative dimension in shape {list(dims)}")
    ctx.define_constant(np.full(dims, fill[0], dtype=fill.dtype))


_WINDOW = {"auto_pad", "dilations", "kernel_shape", "pads", "strides"}

CONVERTERS: dict[str, OpSupport] = {
    "Add": OpSupport(frozenset({"axis", "broadcast"}), binary),
    "AveragePool": OpSupport(frozenset(_WINDOW | {"ceil_mode", "count_include_pad"}), averagepool),
    "BatchNormalization": OpSupport(
        frozenset({"epsilon", "momentum", "spatial", "training_mode", "is_test", "consumed_inputs"}), batchnorm),
    "Concat": OpSupport(frozenset({"axis"}), concat),
    "Constant": OpSupport(frozenset({"value", "value_float", "value_floats", "value_int", "value_ints"}), constant),
    "ConstantOfShape": OpSupport(frozenset({"value"}), constant_of_shape),
    "Conv": OpSupport(frozenset(_WINDOW | {"group"}), conv),
    "Dropout": OpSupport(frozenset({"ratio", "seed", "is_test"}), dropout),
    "Flatten": OpSupport(frozenset({"axis"}), flatten),
    "Gemm": OpSupport(frozenset({"alpha", "beta", "transA", "transB", "broadcast"}), gemm),
    "GlobalAveragePool": OpSupport(frozenset(), plain),
    "Identity": OpSupport(frozenset(), identity),
    "MatMul": OpSupport(frozenset(), plain),
    "MaxPool": OpSupport(frozenset(_WINDOW | {"ceil_mode", "storage_order"}), maxpool),
    "Mul": OpSupport(frozenset({"axis", "broadcast"}), binary),
    "Relu": OpSupport(frozenset({"consumed_inputs"}), plain),
    "Reshape": OpSupport(frozenset({"allowzero"}), reshape),
    "Softmax": OpSupport(frozenset({"axis"}), softmax),
    "Sum": OpSupport(frozenset(), plain),
}


def unsupported_op(op_type: str, domain: str) -> UnsupportedOpError:
    where = f" in domain {domain!r}" if domain not in ("", "ai.onnx") else ""
    return UnsupportedOpError(
        f"op {op_type}{where} is not supported; supported ops (default domain): {', '.join(sorted(CONVERTERS))}"
    )

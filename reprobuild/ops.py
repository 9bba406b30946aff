"""The ops of the IR: their canonical attributes and their shape inference.

The list of supported ops lives here, in ``SHAPE_FUNCTIONS`` (sorted by name). The ONNX frontend normalizes each
node into one of these ops, filling defaults and resolving padding, so that a layer's attributes are explicit and
complete; the builder and the runtime never see ONNX defaults.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from reprobuild.errors import ModelError
from reprobuild.ir import Layer

Shape = tuple[int, ...]
ShapeFn = Callable[[Layer, Sequence[Shape]], list[Shape]]


def _fail(layer: Layer, message: str) -> ModelError:
    return ModelError(f"layer {layer.name!r} ({layer.op}): {message}")


def broadcast_shapes(layer: Layer, shapes: Sequence[Shape]) -> Shape:
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*shapes))
    except ValueError:
        raise _fail(layer, f"input shapes {[list(s) for s in shapes]} do not broadcast (numpy rules)") from None


def _elementwise(layer: Layer, shapes: Sequence[Shape]) -> list[Shape]:
    return [broadcast_shapes(layer, shapes)]


def _same(layer: Layer, shapes: Sequence[Shape]) -> list[Shape]:
    return [shapes[0]]


def window_output(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int, dilation: int,
                  ceil_mode: bool = False) -> int:
    """Output length of a sliding window, as ONNX (and onnxruntime) define it, ceil_mode included."""
    span = size + pad_begin + pad_end - dilation * (kernel - 1) - 1
    if not ceil_mode:
        return span // stride + 1
    out = math.ceil(span / stride) + 1
    if (out - 1) * stride >= size + pad_begin:  # the last window must start inside the input or its begin pad
        out -= 1
    return out


def _spatial(layer: Layer, x: Shape, kernel: Sequence[int], ceil_mode: bool = False) -> tuple[int, int]:
    pads, strides, dil = layer.attr("pads"), layer.attr("strides"), layer.attr("dilations", (1, 1))
    hw = []
    for i in range(2):
        out = window_output(x[2 + i], kernel[i], strides[i], pads[i], pads[i + 2], dil[i], ceil_mode)
        if out < 1:
            raise _fail(layer, f"the window does not fit: input {list(x)}, kernel {list(kernel)}, pads {list(pads)}")
        hw.append(out)
    return hw[0], hw[1]


def _conv(layer: Layer, shapes: Sequence[Shape]) -> list[Shape]:
    x, w = shapes[0], shapes[1]
    if len(x) != 4 or len(w) != 4:
        raise _fail(layer, f"only 2-D convolution (rank-4 input and weight) is supported; got {list(x)}, {list(w)}")
    group = layer.attr("group")
    if x[1] != w[1] * group:
        raise _fail(layer, f"input has {x[1]} channels but weight {list(w)} with group={group} expects {w[1] * group}")
    if w[0] % group:
        raise _fail(layer, f"{w[0]} output channels are not divisible by group={group}")
    if len(shapes) > 2 and shapes[2] != (w[0],):
        raise _fail(layer, f"bias has shape {list(shapes[2])}, expected [{w[0]}]")
    h, wd = _spatial(layer, x, w[2:])
    return [(x[0], w[0], h, wd)]


def _pool(layer: Layer, shapes: Sequence[Shape]) -> list[Shape]:
    x = shapes[0]
    if len(x) != 4:
        raise _fail(layer, f"only 2-D pooling over a rank-4 (N, C, H, W) input is supported; got {list(x)}")
    h, w = _spatial(layer, x, layer.attr("kernel_shape"), bool(layer.attr("ceil_mode", 0)))
    return [(x[0], x[1], h, w)]


def _global_pool(layer: Layer, shapes: Sequence[Shape]) -> list[Shape]:
    x = shapes[0]
    if len(x) < 3:
        raise _fail(layer, f"needs an input of rank >= 3 (N, C, spatial...); got {list(x)}")
    return [(x[0], x[1]) + (1,) * (len(x) - 2)]


def _gemm(layer: Layer, shapes: Sequence[Shape]) -> list[Shape]:
    a, b = shapes[0], shapes[1]
    if len(a) != 2 or len(b) != 2:
        raise _fail(layer, f"Gemm needs rank-2 A and B; got {list(a)}, {list(b)}")
    m, k = (a[1], a[0]) if layer.attr("transA") else a
    k2, n = (b[1], b[0]) if layer.attr("transB") else b
    if k != k2:
        raise _fail(layer, f"inner dimensions differ: A gives K={k}, B gives K={k2}")
    if len(shapes) > 2 and broadcast_shapes(layer, [shapes[2], (m, n)]) != (m, n):
        raise _fail(layer, f"C of shape {list(shapes[2])} does not broadcast to [{m}, {n}]")
    return [(m, n)]


def _matmul(layer: Layer, shapes: Sequence[Shape]) -> list[Shape]:
    a, b = shapes
    if len(a) < 2 or len(b) < 2:
        raise _fail(layer, f"MatMul of rank-1 operands is not supported (got {list(a)}, {list(b)}); reshape to 2-D")
    if a[-1] != b[-2]:
        raise _fail(layer, f"inner dimensions differ: {list(a)} @ {list(b)}")
    batch = broadcast_shapes(layer, [a[:-2], b[:-2]])
    return [(*batch, a[-2], b[-1])]


def _batchnorm(layer: Layer, shapes: Sequence[Shape]) -> list[Shape]:
    x = shapes[0]
    if len(x) < 2:
        raise _fail(layer, f"needs an input of rank >= 2 (N, C, ...); got {list(x)}")
    for s in shapes[1:]:
        if s != (x[1],):
            raise _fail(layer, f"parameter of shape {list(s)} does not match {x[1]} channels")
    return [x]


def _flatten(layer: Layer, shapes: Sequence[Shape]) -> list[Shape]:
    x, axis = shapes[0], layer.attr("axis")
    return [(int(np.prod(x[:axis], dtype=np.int64)), int(np.prod(x[axis:], dtype=np.int64)))]


def _reshape(layer: Layer, shapes: Sequence[Shape]) -> list[Shape]:
    target = tuple(layer.attr("shape"))
    if int(np.prod(target, dtype=np.int64)) != int(np.prod(shapes[0], dtype=np.int64)):
        raise _fail(layer, f"cannot reshape {list(shapes[0])} to {list(target)}")
    return [target]


def _concat(layer: Layer, shapes: Sequence[Shape]) -> list[Shape]:
    axis = layer.attr("axis")
    first = shapes[0]
    for s in shapes[1:]:
        if len(s) != len(first) or any(a != b for i, (a, b) in enumerate(zip(s, first)) if i != axis):
            raise _fail(layer, f"inputs {[list(x) for x in shapes]} differ outside the concat axis {axis}")
    return [(*first[:axis], sum(s[axis] for s in shapes), *first[axis + 1:])]


SHAPE_FUNCTIONS: dict[str, ShapeFn] = {
    "Add": _elementwise,
    "AveragePool": _pool,
    "BatchNormalization": _batchnorm,
    "Concat": _concat,
    "Conv": _conv,
    "Flatten": _flatten,
    "Gemm": _gemm,
    "GlobalAveragePool": _global_pool,
    "Identity": _same,
    "MatMul": _matmul,
    "MaxPool": _pool,
    "Mul": _elementwise,
    "Relu": _same,
    "Reshape": _reshape,
    "Softmax": _same,
    "Sum": _elementwise,
}


def infer_shapes(layer: Layer, shapes: Sequence[Shape]) -> list[Shape]:
    fn = SHAPE_FUNCTIONS.get(layer.op)
    if fn is None:
        raise _fail(layer, f"no shape function; supported ops: {', '.join(sorted(SHAPE_FUNCTIONS))}")
    return fn(layer, shapes)

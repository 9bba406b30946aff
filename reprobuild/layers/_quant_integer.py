"""Integer matrix products and convolutions: MatMulInteger and ConvInteger (int32 results), and QLinearMatMul
and QLinearConv (requantized to int8/uint8).

The products run in int32 after subtracting the zero points, so they are exact (and wrap on int32 overflow,
which ONNX allows only there); integer sums do not depend on their order, so every backend agrees bit for bit.
Requantization follows the reference: the multiplier ``a_scale * b_scale / y_scale`` in the scales' type
(float16 and bfloat16 rounded after each step), then ``int32 * multiplier + y_zero_point`` in float64, rounded
half to even and saturated.

Zero points and scales: A's (and x's) are per tensor, or per row in the N-D form [..., M, 1]; B's are per
tensor, per column ([N] or [..., 1, N]), and w's per tensor or per output channel ([M]). A 1-D per-row A zero
point or scale ([M]) is refused for QLinearMatMul (the reference broadcasts it along K instead) and reshaped to
[M, 1] for MatMulInteger (as its spec says); y's are per tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reprobuild.layers._attention_round import rounder, work_dtype
from reprobuild.layers._quant_common import saturate_int
from reprobuild.layers._window import output_spatial
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType, broadcast
from reprobuild.layers.op_conv import conv_nd
from reprobuild.layers.op_gemm import MatMul

_Q8 = ("int8", "uint8")


def _matmul_shape(a: TensorType, b: TensorType) -> tuple[int, ...]:
    return MatMul().infer({}, [TensorType(a.shape, "int32"), TensorType(b.shape, "int32")])[0].shape


def _check_row_param(t: TensorType, a: TensorType, what: str, allow_vector: bool) -> None:
    """Per tensor, per row [..., M, 1] (or [M] when ``allow_vector``) for A of shape ``a``."""
    if t.size == 1 or (allow_vector and a.rank >= 2 and t.shape == (a.shape[-2],)):
        return
    if t.rank >= 2 and t.shape[-1] == 1 and broadcast(t.shape, a.shape) == a.shape:
        return
    raise OpError(f"{what} has shape {list(t.shape)}; for A {list(a.shape)} it must be a single value or per row "
                  f"([..., {a.shape[-2] if a.rank >= 2 else 1}, 1])")


def _check_column_param(t: TensorType, b: TensorType, what: str) -> None:
    """Per tensor, per column [N] or [..., 1, N] for B of shape ``b``."""
    if t.size == 1 or (b.rank >= 2 and t.shape == (b.shape[-1],)):
        return
    if t.rank >= 2 and t.shape[-2] == 1 and broadcast(t.shape, b.shape) == b.shape:
        return
    raise OpError(f"{what} has shape {list(t.shape)}; for B {list(b.shape)} it must be a single value or per "
                  f"column ([{b.shape[-1]}] or [..., 1, {b.shape[-1]}])")


def _rows(xp: Any, v: Any, a_rank: int) -> Any:
    """A per-row parameter of A in a form that broadcasts: [M] becomes [M, 1]."""
    if v.size == 1:
        return v.reshape(())
    return v.reshape(-1, 1) if v.ndim == 1 and a_rank >= 2 else v


def _centered(xp: Any, q: Any, zero: Any | None) -> Any:
    q = q.astype(xp.int32)
    return q if zero is None else q - zero.astype(xp.int32)


def _out_channels(v: Any, rank: int) -> Any:
    """A weight zero point (one value, or one per output channel) shaped to broadcast against the weight."""
    return v.reshape(()) if v.size == 1 else v.reshape((-1,) + (1,) * (rank - 1))


def _multiplier(xp: Any, scale_a: Any, scale_b: Any, scale_y: Any) -> Any:
    """``scale_a * scale_b / scale_y`` in the scales' type, as float64."""
    dtype = str(scale_a.dtype)
    work, rnd = work_dtype(dtype), rounder(xp, dtype)
    a, b, y = (s.astype(work) for s in (scale_a, scale_b, scale_y))
    return rnd(rnd(a * b) / y).astype(xp.float64)


def _requantize(xp: Any, acc: Any, multiplier: Any, zero: Any, dtype: str) -> Any:
    return saturate_int(xp, xp.rint(acc.astype(xp.float64) * multiplier + zero.astype(xp.float64)), dtype)


class MatMulInteger(LayerDef):
    op = "MatMulInteger"
    num_inputs = (2, 4)
    dtypes = _Q8

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        t = dict(zip(attrs["roles"], inputs))
        a, b = t["A"], t["B"]
        for name, x in t.items():
            if x.dtype not in _Q8:
                raise OpError(f"{name} has dtype {x.dtype}; MatMulInteger takes int8 or uint8")
        for zero, of in (("a_zero_point", "A"), ("b_zero_point", "B")):
            if zero in t and t[zero].dtype != t[of].dtype:
                raise OpError(f"{zero} has dtype {t[zero].dtype} but {of} has {t[of].dtype}")
        if "a_zero_point" in t:
            _check_row_param(t["a_zero_point"], a, "a_zero_point", allow_vector=True)
        if "b_zero_point" in t:
            _check_column_param(t["b_zero_point"], b, "b_zero_point")
        return [TensorType(_matmul_shape(a, b), "int32")]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        t = dict(zip(attrs["roles"], inputs))
        a_zero = _rows(xp, t["a_zero_point"], t["A"].ndim) if "a_zero_point" in t else None
        a = _centered(xp, t["A"], a_zero)
        b = _centered(xp, t["B"], t.get("b_zero_point"))
        return [xp.matmul(a, b).astype(xp.int32, copy=False)]


class QLinearMatMul(LayerDef):
    op = "QLinearMatMul"
    num_inputs = (8, 8)
    dtypes = _Q8

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero = inputs
        for name, x, of in (("a", a, a), ("a_zero_point", a_zero, a), ("b", b, b), ("b_zero_point", b_zero, b),
                            ("y_zero_point", y_zero, y_zero)):
            if x.dtype not in _Q8 or x.dtype != of.dtype:
                raise OpError(f"{name} has dtype {x.dtype}; reprobuild's QLinearMatMul takes int8 or uint8, each "
                              "zero point of its tensor's dtype (float8 is not supported)")
        for name, s in (("a_scale", a_scale), ("b_scale", b_scale), ("y_scale", y_scale)):
            if s.dtype not in ("float32", "float16", "bfloat16") or s.dtype != a_scale.dtype:
                raise OpError(f"{name} has dtype {s.dtype}; the scales must share one float type")
        for name, x in (("a", a_scale), ("a", a_zero)):
            _check_row_param(x, a, f"{name}'s scale or zero point", allow_vector=False)
        for x in (b_scale, b_zero):
            _check_column_param(x, b, "b's scale or zero point")
        if y_scale.size != 1 or y_zero.size != 1:
            raise OpError(f"y_scale {list(y_scale.shape)} and y_zero_point {list(y_zero.shape)} must be single "
                          "values")
        return [TensorType(_matmul_shape(a, b), y_zero.dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero = inputs
        acc = xp.matmul(_centered(xp, a, _rows(xp, a_zero, a.ndim)), _centered(xp, b, b_zero))
        multiplier = _multiplier(xp, _rows(xp, a_scale, a.ndim), b_scale, y_scale.reshape(()))
        return [_requantize(xp, acc, multiplier, y_zero.reshape(()), str(y_zero.dtype))]


class _IntegerConv(LayerDef):
    """Shared by ConvInteger and QLinearConv: the window attributes, resolved as Conv resolves them."""

    x_at, w_at = 0, 1

    def conv_shape(self, attrs: Attrs, x: TensorType, w: TensorType) -> tuple[int, ...]:
        group = int(attrs["group"])
        if x.rank < 3 or w.rank != x.rank or group < 1 or x.shape[1] != w.shape[1] * group or w.shape[0] % group:
            raise OpError(f"input {list(x.shape)} and weight {list(w.shape)} do not fit group={group}")
        return (x.shape[0], w.shape[0], *output_spatial(x.shape[2:], w.shape[2:], attrs))

    @staticmethod
    def channel_param(t: TensorType, m: int, what: str) -> None:
        if t.size != 1 and t.shape != (m,):
            raise OpError(f"{what} has shape {list(t.shape)}; it must be a single value or one per output channel "
                          f"([{m}])")

    @staticmethod
    def per_channel(v: Any, rank: int) -> Any:
        return v.reshape(()) if v.size == 1 else v.reshape((1, -1) + (1,) * (rank - 2))


class ConvInteger(_IntegerConv):
    op = "ConvInteger"
    version = 2
    num_inputs = (2, 4)
    dtypes = _Q8

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        t = dict(zip(attrs["roles"], inputs))
        x, w = t["x"], t["w"]
        for name, of in (("x", "x"), ("w", "w"), ("x_zero_point", "x"), ("w_zero_point", "w")):
            if name in t and (t[name].dtype not in _Q8 or t[name].dtype != t[of].dtype):
                raise OpError(f"{name} has dtype {t[name].dtype}; ConvInteger takes int8 or uint8, each zero point "
                              "of its tensor's dtype")
        if "x_zero_point" in t and t["x_zero_point"].size != 1:
            raise OpError(f"x_zero_point has shape {list(t['x_zero_point'].shape)}; it must be a single value")
        if "w_zero_point" in t:
            self.channel_param(t["w_zero_point"], w.shape[0], "w_zero_point")
        return [TensorType(self.conv_shape(attrs, x, w), "int32")]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        t = dict(zip(attrs["roles"], inputs))
        x = _centered(xp, t["x"], t["x_zero_point"].reshape(()) if "x_zero_point" in t else None)
        w_zero = _out_channels(t["w_zero_point"], t["w"].ndim) if "w_zero_point" in t else None
        w = _centered(xp, t["w"], w_zero)
        return [conv_nd(xp, x, w, None, attrs)]


class QLinearConv(_IntegerConv):
    op = "QLinearConv"
    version = 2
    num_inputs = (8, 9)
    dtypes = _Q8
    w_at = 3

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        x, x_scale, x_zero, w, w_scale, w_zero, y_scale, y_zero = inputs[:8]
        for name, q, of in (("x", x, x), ("x_zero_point", x_zero, x), ("w", w, w), ("w_zero_point", w_zero, w),
                            ("y_zero_point", y_zero, y_zero)):
            if q.dtype not in _Q8 or q.dtype != of.dtype:
                raise OpError(f"{name} has dtype {q.dtype}; QLinearConv takes int8 or uint8, each zero point of "
                              "its tensor's dtype")
        for name, s in (("x_scale", x_scale), ("w_scale", w_scale), ("y_scale", y_scale)):
            if s.dtype != "float32":
                raise OpError(f"{name} has dtype {s.dtype}; QLinearConv's scales are float32")
        for name, s in (("x_scale", x_scale), ("x_zero_point", x_zero), ("y_scale", y_scale),
                        ("y_zero_point", y_zero)):
            if s.size != 1:
                raise OpError(f"{name} has shape {list(s.shape)}; it must be a single value")
        self.channel_param(w_scale, w.shape[0], "w_scale")
        self.channel_param(w_zero, w.shape[0], "w_zero_point")
        if len(inputs) > 8 and (inputs[8].dtype != "int32" or inputs[8].shape != (w.shape[0],)):
            raise OpError(f"the bias B must be int32 of shape [{w.shape[0]}]; it is {inputs[8].dtype} "
                          f"{list(inputs[8].shape)}")
        return [TensorType(self.conv_shape(attrs, x, w), y_zero.dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x, x_scale, x_zero, w, w_scale, w_zero, y_scale, y_zero = inputs[:8]
        bias = inputs[8] if len(inputs) > 8 else None
        w_centered = _centered(xp, w, _out_channels(w_zero, w.ndim))
        acc = conv_nd(xp, _centered(xp, x, x_zero.reshape(())), w_centered, bias, attrs)
        multiplier = _multiplier(xp, x_scale.reshape(()), self.per_channel(w_scale, x.ndim), y_scale.reshape(()))
        return [_requantize(xp, acc, multiplier, y_zero.reshape(()), str(y_zero.dtype))]

"""Elementwise logic, comparisons and bits, with numpy broadcasting: And, Or, Xor, Not; Equal, Greater,
GreaterOrEqual, Less, LessOrEqual; BitShift, BitwiseAnd, BitwiseOr, BitwiseXor, BitwiseNot; Where; BitCast.

ONNX subtleties:

- Comparisons return bool; a NaN compares unequal (and neither greater nor less) to everything, itself included.
  Equal also takes bool, and since Equal-19 strings, which reprobuild does not support as tensors at all.
- BitShift-11 takes unsigned types; BitShift-28 adds signed ones, whose right shift is arithmetic (it copies
  the sign bit) and whose left shift drops bits past the sign bit (done on the unsigned view, as C cannot).
  A shift by a negative amount or by the width of the type or more gives what the fill bits alone give: 0, or
  -1 for a right shift of a negative value (BitShift-28's rule, also used for BitShift-11, which left it open).
- Where broadcasts all three inputs together; X and Y have one dtype, the condition is bool.
- BitCast (opset 26) reinterprets the bytes of each element as another type of the same width. Bytes that are
  not 0 or 1 become true when cast to bool. The 4- and 2-bit types are refused: reprobuild stores them one per
  byte, so there are no shared bytes to reinterpret.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reprobuild.core.dtypes import INTEGERS, NARROW, NUMERIC, np_dtype
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType, broadcast
from reprobuild.layers.families import Binary, Unary

_BOOL = ("bool",)


class _Compare(Binary):
    dtypes, out_dtype = NUMERIC, "bool"


class Equal(_Compare):
    op, dtypes = "Equal", (*_BOOL, *NUMERIC)

    def fn(self, xp: Any, a: Any, b: Any, attrs: Attrs) -> Any:
        return a == b


class Greater(_Compare):
    op = "Greater"

    def fn(self, xp: Any, a: Any, b: Any, attrs: Attrs) -> Any:
        return a > b


class GreaterOrEqual(_Compare):
    op = "GreaterOrEqual"

    def fn(self, xp: Any, a: Any, b: Any, attrs: Attrs) -> Any:
        return a >= b


class Less(_Compare):
    op = "Less"

    def fn(self, xp: Any, a: Any, b: Any, attrs: Attrs) -> Any:
        return a < b


class LessOrEqual(_Compare):
    op = "LessOrEqual"

    def fn(self, xp: Any, a: Any, b: Any, attrs: Attrs) -> Any:
        return a <= b


class And(Binary):
    op, dtypes = "And", _BOOL

    def fn(self, xp: Any, a: Any, b: Any, attrs: Attrs) -> Any:
        return xp.logical_and(a, b)


class Or(Binary):
    op, dtypes = "Or", _BOOL

    def fn(self, xp: Any, a: Any, b: Any, attrs: Attrs) -> Any:
        return xp.logical_or(a, b)


class Xor(Binary):
    op, dtypes = "Xor", _BOOL

    def fn(self, xp: Any, a: Any, b: Any, attrs: Attrs) -> Any:
        return xp.logical_xor(a, b)


class Not(Unary):
    op, dtypes, upcast = "Not", _BOOL, False

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.logical_not(x)


class BitShift(Binary):
    """Canonical attribute ``direction``: "LEFT" or "RIGHT"."""

    op, dtypes = "BitShift", INTEGERS
    version = 2

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        if attrs.get("direction") not in ("LEFT", "RIGHT"):
            raise OpError(f"direction is {attrs.get('direction')!r}; it must be 'LEFT' or 'RIGHT'")
        return super().infer(attrs, inputs)

    def fn(self, xp: Any, a: Any, b: Any, attrs: Attrs) -> Any:
        zero = a.dtype.type(0)
        valid = (b >= zero) & (b < 8 * a.dtype.itemsize)
        amount = xp.where(valid, b, zero)
        if attrs["direction"] == "LEFT":
            unsigned = np_dtype(f"uint{8 * a.dtype.itemsize}")
            shifted = xp.left_shift(a.view(unsigned), amount.view(unsigned)).view(a.dtype)
            return xp.where(valid, shifted, zero)
        fill = xp.where(a < zero, a.dtype.type(-1), zero) if a.dtype.kind == "i" else zero
        return xp.where(valid, xp.right_shift(a, amount), fill)


class BitwiseAnd(Binary):
    op, dtypes = "BitwiseAnd", INTEGERS

    def fn(self, xp: Any, a: Any, b: Any, attrs: Attrs) -> Any:
        return xp.bitwise_and(a, b)


class BitwiseNot(Unary):
    op, dtypes = "BitwiseNot", INTEGERS

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.invert(x)


class BitwiseOr(Binary):
    op, dtypes = "BitwiseOr", INTEGERS

    def fn(self, xp: Any, a: Any, b: Any, attrs: Attrs) -> Any:
        return xp.bitwise_or(a, b)


class BitwiseXor(Binary):
    op, dtypes = "BitwiseXor", INTEGERS

    def fn(self, xp: Any, a: Any, b: Any, attrs: Attrs) -> Any:
        return xp.bitwise_xor(a, b)


class Where(LayerDef):
    op, dtypes = "Where", (*_BOOL, *NUMERIC)
    num_inputs = (3, 3)

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        cond, x, y = inputs
        if cond.dtype != "bool":
            raise OpError(f"the condition (input 0) has dtype {cond.dtype}; Where needs bool (Cast it first)")
        if x.dtype not in self.dtypes:
            raise OpError(f"X (input 1) has dtype {x.dtype}; Where supports {', '.join(self.dtypes)}")
        if y.dtype != x.dtype:
            raise OpError(f"Y (input 2) has dtype {y.dtype} but X (input 1) has {x.dtype}; Where needs them equal")
        return [TensorType(broadcast(cond.shape, x.shape, y.shape), x.dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        cond, x, y = inputs
        return [xp.where(cond, x, y).astype(x.dtype, copy=False)]


#: Types BitCast reinterprets: every type stored in whole bytes.
_BITCAST_TYPES = (*_BOOL, *NUMERIC, *(t for t in NARROW if t.startswith("float8")))


class BitCast(LayerDef):
    """Canonical attribute ``to``: the target dtype's name (``int32``, ``float16``, ...)."""

    op, dtypes = "BitCast", _BITCAST_TYPES
    version = 2

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        to = str(attrs.get("to"))
        if to not in _BITCAST_TYPES or np_dtype(to).itemsize != np_dtype(inputs[0].dtype).itemsize:
            raise OpError(f"cannot reinterpret {inputs[0].dtype} as {to}: BitCast needs a whole-byte type of the "
                          "same width")
        return [TensorType(inputs[0].shape, to)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x, to = inputs[0], str(attrs["to"])
        if to == "bool":
            return [x.view(np_dtype(f"uint{8 * x.dtype.itemsize}")) != 0]
        return [x.view(np_dtype(to)).copy()]


LAYERS = (And(), BitCast(), BitShift(), BitwiseAnd(), BitwiseNot(), BitwiseOr(), BitwiseXor(), Equal(), Greater(),
          GreaterOrEqual(), Less(), LessOrEqual(), Not(), Or(), Where(), Xor())

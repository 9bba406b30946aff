"""Elementwise arithmetic with numpy broadcasting: Add, Sub, Mul, Div (integer division truncates toward zero,
as in C and onnxruntime), and the variadic Sum, Mean, Max, Min (folded left to right). Version 6 of the variadic
ops (which an opset-6 model upgraded to opset 7 still uses) requires equal shapes, where broadcasting changes
nothing.
"""

from __future__ import annotations

from typing import Any

from reprobuild.core.dtypes import NUMERIC
from reprobuild.layers.base import Attrs
from reprobuild.layers.families import Binary, Variadic


class Add(Binary):
    op = "Add"

    def fn(self, xp: Any, a: Any, b: Any, attrs: Attrs) -> Any:
        return a + b


class Sub(Binary):
    op = "Sub"

    def fn(self, xp: Any, a: Any, b: Any, attrs: Attrs) -> Any:
        return a - b


class Mul(Binary):
    op = "Mul"

    def fn(self, xp: Any, a: Any, b: Any, attrs: Attrs) -> Any:
        return a * b


class Div(Binary):
    op = "Div"

    def fn(self, xp: Any, a: Any, b: Any, attrs: Attrs) -> Any:
        if a.dtype.kind in "iu":
            return truncating_divide(xp, a, b)
        return a / b


def truncating_divide(xp: Any, a: Any, b: Any) -> Any:
    """Integer a / b rounded toward zero; division by zero gives 0 (ONNX leaves it undefined)."""
    safe = xp.where(b == 0, xp.ones_like(b), b)
    q = xp.abs(a) // xp.abs(safe)
    q = xp.where((a < 0) != (safe < 0), -q, q) if a.dtype.kind == "i" else q
    return xp.where(b == 0, xp.zeros_like(q), q).astype(a.dtype, copy=False)


class Sum(Variadic):
    op, dtypes = "Sum", NUMERIC

    def fn(self, xp: Any, acc: Any, x: Any) -> Any:
        return acc + x


class Mean(Variadic):
    op, dtypes = "Mean", NUMERIC

    def fn(self, xp: Any, acc: Any, x: Any) -> Any:
        return acc + x

    def finish(self, xp: Any, acc: Any, count: int) -> Any:
        return acc / acc.dtype.type(count) if acc.dtype.kind == "f" else acc // count


class Max(Variadic):
    op, dtypes = "Max", NUMERIC

    def fn(self, xp: Any, acc: Any, x: Any) -> Any:
        return xp.maximum(acc, x)


class Min(Variadic):
    op, dtypes = "Min", NUMERIC

    def fn(self, xp: Any, acc: Any, x: Any) -> Any:
        return xp.minimum(acc, x)


LAYERS = (Add(), Div(), Max(), Mean(), Min(), Mul(), Sub(), Sum())

"""Elementwise arithmetic with numpy broadcasting: Add, Sub, Mul, Div (integer division truncates toward zero,
as in C and onnxruntime), and the variadic Sum, Mean, Max, Min (folded left to right). Version 6 of the variadic
ops (which an opset-6 model upgraded to opset 7 still uses) requires equal shapes, where broadcasting changes
nothing.

Add, Sub, Mul, Div, Max and Min compute their formula from the table in ``reprobuild.layers.formulas`` (the one the
generated kernels' C is written from), integers included; integer Div's truncating division is its own.
"""

from __future__ import annotations

from typing import Any

from reprobuild.core.dtypes import NUMERIC
from reprobuild.layers.base import Attrs
from reprobuild.layers.families import Binary, Variadic
from reprobuild.layers.formulas import evaluate


class Add(Binary):
    op = "Add"
    version = 2  # 2: computes through the formula table (layers/formulas.py); the same bits

    def fn(self, xp: Any, a: Any, b: Any, attrs: Attrs) -> Any:
        return evaluate(xp, "Add", [a, b], attrs)


class Sub(Binary):
    op = "Sub"
    version = 2  # 2: computes through the formula table (layers/formulas.py); the same bits

    def fn(self, xp: Any, a: Any, b: Any, attrs: Attrs) -> Any:
        return evaluate(xp, "Sub", [a, b], attrs)


class Mul(Binary):
    op = "Mul"
    version = 2  # 2: computes through the formula table (layers/formulas.py); the same bits

    def fn(self, xp: Any, a: Any, b: Any, attrs: Attrs) -> Any:
        return evaluate(xp, "Mul", [a, b], attrs)


class Div(Binary):
    op = "Div"
    version = 2  # 2: computes through the formula table (layers/formulas.py); the same bits

    def fn(self, xp: Any, a: Any, b: Any, attrs: Attrs) -> Any:
        if a.dtype.kind in "iu":
            return truncating_divide(xp, a, b)
        return evaluate(xp, "Div", [a, b], attrs)


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
    version = 2  # 2: computes through the formula table (layers/formulas.py); the same bits

    def fn(self, xp: Any, acc: Any, x: Any) -> Any:
        return evaluate(xp, "Max", [acc, x], {})


class Min(Variadic):
    op, dtypes = "Min", NUMERIC
    version = 2  # 2: computes through the formula table (layers/formulas.py); the same bits

    def fn(self, xp: Any, acc: Any, x: Any) -> Any:
        return evaluate(xp, "Min", [acc, x], {})


LAYERS = (Add(), Div(), Max(), Mean(), Min(), Mul(), Sub(), Sum())

"""One formula per elementwise op: the table from which the C of the generated fused elementwise kernels and of
the convolution and GEMM epilogues (``epilogue.cuh``) is written, and which the ops' NumPy references follow.

A formula is a Python function of a math namespace ``m`` and its operands, run two ways:

- with :class:`CMath` its operands are C expressions and every operation writes C: the correctly rounded
  intrinsics (``__fadd_rn`` and friends, which the compiler never contracts into an FMA) for + - * / sqrt, and
  CUDA's libm for the rest; a helper (``sigmoid``, ``relu``, ...) is called by name and defined once in the text;
- with :class:`NumpyMath` its operands are float32 arrays and every operation is NumPy's, in float32.

``PRIMITIVES`` pairs each C operation with its NumPy counterpart, the one place where the two meet; so the C a
formula writes computes what its NumPy evaluation computes, up to the last bits of CUDA's ``expf``/``tanhf``/
``erff``/``powf``. The tests check, op by op, that the NumPy evaluation gives the op reference's bits on the CPU,
and that the generated C matches the reference on a GPU.

``python -m reprobuild.kernels.formulas`` rewrites ``epilogue.cuh`` from the table (``--check``: fail if the
committed file differs); the header is committed so that kernel identities stay computable from the files alone.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from reprobuild.core.errors import BuildError
from reprobuild.layers._xp import erf

#: erf as the CPU reference computes it (the C library's, in double precision, rounded once to x's dtype).
_erf = functools.partial(erf, np)


#: name -> (C template, NumPy function in float32): the one pairing of each C operation with NumPy's.
PRIMITIVES: Mapping[str, tuple[str, Callable[..., Any]]] = MappingProxyType({
    "add": ("__fadd_rn({0}, {1})", np.add), "sub": ("__fsub_rn({0}, {1})", np.subtract),
    "mul": ("__fmul_rn({0}, {1})", np.multiply), "div": ("__fdiv_rn({0}, {1})", np.divide),
    "rcp": ("__frcp_rn({0})", np.reciprocal), "sqrt": ("__fsqrt_rn({0})", np.sqrt),
    "neg": ("(-{0})", np.negative), "abs": ("fabsf({0})", np.abs), "ceil": ("ceilf({0})", np.ceil),
    "floor": ("floorf({0})", np.floor), "exp": ("expf({0})", np.exp), "expm1": ("expm1f({0})", np.expm1),
    "log": ("logf({0})", np.log), "log1p": ("log1pf({0})", np.log1p), "tanh": ("tanhf({0})", np.tanh),
    "erf": ("erff({0})", _erf), "pow": ("powf({0}, {1})", np.power),
    "fmax": ("fmaxf({0}, {1})", np.fmax), "fmin": ("fminf({0}, {1})", np.fmin),
    "lt": ("({0} < {1})", np.less), "gt": ("({0} > {1})", np.greater), "ge": ("({0} >= {1})", np.greater_equal),
    "isnan": ("({0} != {0})", np.isnan), "either": ("({0} || {1})", np.logical_or),
    "where": ("({0} ? {1} : {2})", np.where),
})


def f32_literal(value: float) -> str:
    """A float as C text of the exact float32 NumPy rounds it to: a short literal where it is one exactly (``0.f``,
    ``0.5f``), else its bits, so that no parsing can differ."""
    with np.errstate(over="ignore"):  # a bound beyond float32's range is infinite there too
        single = np.float32(value)
    if np.isfinite(single) and float(single) == float(value) and abs(value) < 2**24 and np.signbit(single) == 0:
        if float(value).is_integer():
            return f"{int(value)}.f"
        if "e" not in repr(float(value)) and len(repr(float(value))) <= 8:
            return f"{float(value)!r}f"
    bits = int(np.array(single, dtype=np.float32).view(np.uint32))
    return f"__int_as_float(0x{bits:08x})"


class Value:
    """An operand of a formula: C text or a float32 array, with Python's operators as the table's primitives."""

    __slots__ = ("math", "v")

    def __init__(self, math: Math, v: Any) -> None:
        self.math, self.v = math, v

    def __add__(self, other: Any) -> Value:
        return self.math.apply("add", self, other)

    def __radd__(self, other: Any) -> Value:
        return self.math.apply("add", other, self)

    def __sub__(self, other: Any) -> Value:
        return self.math.apply("sub", self, other)

    def __rsub__(self, other: Any) -> Value:
        return self.math.apply("sub", other, self)

    def __mul__(self, other: Any) -> Value:
        return self.math.apply("mul", self, other)

    def __rmul__(self, other: Any) -> Value:
        return self.math.apply("mul", other, self)

    def __truediv__(self, other: Any) -> Value:
        return self.math.apply("div", self, other)

    def __rtruediv__(self, other: Any) -> Value:
        return self.math.apply("div", other, self)

    def __neg__(self) -> Value:
        return self.math.apply("neg", self)

    def __lt__(self, other: Any) -> Value:
        return self.math.apply("lt", self, other)

    def __gt__(self, other: Any) -> Value:
        return self.math.apply("gt", self, other)

    def __ge__(self, other: Any) -> Value:
        return self.math.apply("ge", self, other)

    def __or__(self, other: Any) -> Value:
        return self.math.apply("either", self, other)


Helper = Callable[..., Value]


class Math:
    """The namespace a formula computes with: ``m.exp(x)``, ``m.where(c, a, b)``, ``m.call(sigmoid, x)``."""

    def value(self, v: Any) -> Value:
        raise NotImplementedError

    def apply(self, name: str, *args: Any) -> Value:
        raise NotImplementedError

    def call(self, helper: Helper, *args: Any) -> Value:
        raise NotImplementedError

    def let(self, name: str, v: Value) -> Value:
        """``v`` under a name (a ``const float`` in a helper's C body), for a value a formula uses twice."""
        return v

    def __getattr__(self, name: str) -> Callable[..., Value]:
        if name not in PRIMITIVES:
            raise AttributeError(f"the formula table has no primitive {name!r}; see PRIMITIVES")
        return lambda *args: self.apply(name, *args)


class NumpyMath(Math):
    """A formula evaluated by NumPy in float32 (Python numbers become float32 constants)."""

    def value(self, v: Any) -> Value:
        if isinstance(v, Value):
            return v
        return Value(self, np.float32(v) if isinstance(v, (int, float)) else v)

    def apply(self, name: str, *args: Any) -> Value:
        return Value(self, PRIMITIVES[name][1](*(self.value(a).v for a in args)))

    def call(self, helper: Helper, *args: Any) -> Value:
        return helper(self, *(self.value(a) for a in args))


class CMath(Math):
    """A formula written as C: operands are C expressions; helpers are called by name; ``let`` records a
    ``const float`` line in ``lines`` (the body of a helper being written)."""

    def __init__(self, lines: list[str] | None = None) -> None:
        self.lines = lines

    def value(self, v: Any) -> Value:
        if isinstance(v, Value):
            return v
        return Value(self, f32_literal(float(v)) if isinstance(v, (int, float)) else str(v))

    def apply(self, name: str, *args: Any) -> Value:
        return Value(self, PRIMITIVES[name][0].format(*(self.value(a).v for a in args)))

    def call(self, helper: Helper, *args: Any) -> Value:
        return Value(self, f"{helper.__name__}({', '.join(str(self.value(a).v) for a in args)})")

    def let(self, name: str, v: Value) -> Value:
        if self.lines is None:
            raise BuildError(f"let {name!r} outside a helper: only a helper's body has lines to hold it")
        self.lines.append(f"const float {name} = {v.v};")
        return Value(self, name)


# --- helpers: small functions the formulas call by name (defined once in each C text that uses them) -------------


def relu(m: Math, x: Value) -> Value:
    """max(x, 0) as NumPy's maximum computes it: NaN stays NaN."""
    return m.where(m.isnan(x), x, m.where(x > 0, x, 0))


def clip01(m: Math, x: Value) -> Value:
    """x limited to [0, 1], NaN passed through (as np.clip)."""
    return m.where(m.isnan(x), x, m.fmin(m.fmax(x, 0), 1))


def max_nan(m: Math, a: Value, b: Value) -> Value:
    """NumPy's maximum: a NaN in either operand is the result (fmaxf alone would drop it)."""
    return m.where(m.isnan(a) | m.isnan(b), a + b, m.fmax(a, b))


def min_nan(m: Math, a: Value, b: Value) -> Value:
    """NumPy's minimum: a NaN in either operand is the result."""
    return m.where(m.isnan(a) | m.isnan(b), a + b, m.fmin(a, b))


def sigmoid(m: Math, x: Value) -> Value:
    """1 / (1 + e^-x) in the overflow-free form of the reference: e^x / (1 + e^x) for negative x."""
    e = m.let("e", m.exp(-m.abs(x)))
    return m.where(x >= 0, 1 / (1 + e), e / (1 + e))


HELPERS: tuple[Helper, ...] = (relu, clip01, max_nan, min_nan, sigmoid)


# --- the table: op -> formula -------------------------------------------------------------------------------------

#: A formula written out: (m, operands, attributes) -> the result.
Formula = Callable[[Math, Sequence[Value], Mapping[str, Any]], Value]


def _identity(m: Math, x: Sequence[Value], attrs: Mapping[str, Any]) -> Value:
    return x[0]


def _softplus(m: Math, x: Sequence[Value], attrs: Mapping[str, Any]) -> Value:
    """ln(1 + e^x) = max(x, 0) + ln(1 + e^-|x|), which neither overflows nor loses small values."""
    return m.call(relu, x[0]) + m.log1p(m.exp(-m.abs(x[0])))


def _hard_swish(m: Math, x: Sequence[Value], attrs: Mapping[str, Any]) -> Value:
    return x[0] * m.call(clip01, x[0] * (1 / 6) + 0.5)


def _hard_sigmoid(m: Math, x: Sequence[Value], attrs: Mapping[str, Any]) -> Value:
    return m.call(clip01, attrs["alpha"] * x[0] + attrs["beta"])


def _elu(m: Math, x: Sequence[Value], attrs: Mapping[str, Any]) -> Value:
    return m.where(x[0] < 0, attrs["alpha"] * m.expm1(x[0]), x[0])


def _leaky_relu(m: Math, x: Sequence[Value], attrs: Mapping[str, Any]) -> Value:
    return m.where(x[0] < 0, attrs["alpha"] * x[0], x[0])


def _clip(m: Math, x: Sequence[Value], attrs: Mapping[str, Any]) -> Value:
    """min(max(x, min), max) as ONNX defines it (so min > max gives max), each bound only where it is a value."""
    out = x[0]
    for key, helper in (("min", max_nan), ("max", min_nan)):
        if attrs[f"{key}_from"] == "value":
            out = m.call(helper, out, attrs[key])
    return out


def _gelu(m: Math, x: Sequence[Value], attrs: Mapping[str, Any]) -> Value:
    """0.5 x (1 + erf(x / sqrt 2)), or with approximate="tanh" 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))."""
    v = x[0]
    if attrs["approximate"] == "tanh":
        return 0.5 * v * (1 + m.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * (v * v * v))))
    return 0.5 * v * (1 + m.erf(v * (1 / math.sqrt(2))))


#: The formula of every elementwise op a generated kernel or an epilogue computes, after the op's NumPy reference:
#: a primitive's name (applied to the operands), a helper (called on them), or a formula written out.
FORMULAS: Mapping[str, str | Helper | Formula] = MappingProxyType({
    "Abs": "abs", "Add": "add", "Ceil": "ceil", "Clip": _clip, "Div": "div", "Elu": _elu, "Erf": "erf",
    "Exp": "exp", "Floor": "floor", "Gelu": _gelu, "HardSigmoid": _hard_sigmoid, "HardSwish": _hard_swish,
    "Identity": _identity, "LeakyRelu": _leaky_relu, "Log": "log", "Max": max_nan, "Min": min_nan, "Mul": "mul",
    "Neg": "neg", "Pow": "pow", "Reciprocal": "rcp", "Relu": relu, "Sigmoid": sigmoid, "Softplus": _softplus,
    "Sqrt": "sqrt", "Sub": "sub", "Tanh": "tanh",
})


def apply_formula(m: Math, op: str, operands: Sequence[Value], attrs: Mapping[str, Any]) -> Value:
    """``op``'s formula computed with ``m``."""
    entry = FORMULAS.get(op)
    if entry is None:
        raise BuildError(f"the formula table (reprobuild.kernels.formulas) has no formula for {op}")
    if isinstance(entry, str):
        return m.apply(entry, *operands)
    if entry in HELPERS:
        return m.call(entry, *operands)
    return entry(m, operands, attrs)


def c_expression(op: str, operands: Sequence[str], attrs: Mapping[str, Any]) -> str:
    """The C expression of ``op`` on the float C expressions ``operands`` (attributes: numbers become float32
    literals, strings are C expressions, such as a kernel parameter)."""
    m = CMath()
    return str(apply_formula(m, op, [m.value(o) for o in operands], attrs).v)


def evaluate(op: str, operands: Sequence[Any], attrs: Mapping[str, Any]) -> np.ndarray:
    """``op``'s formula evaluated by NumPy in float32 on ``operands`` (what the C computes, but for libm's bits)."""
    m = NumpyMath()
    with np.errstate(all="ignore"):  # both sides of a select are computed; inf and NaN are results, quietly
        result = apply_formula(m, op, [m.value(np.asarray(o, dtype=np.float32)) for o in operands], attrs)
    return np.asarray(result.v, dtype=np.float32)


def helper_definition(helper: Helper) -> str:
    """The C definition of a helper: a ``__device__`` function of floats."""
    params = list(inspect.signature(helper).parameters)[1:]
    lines: list[str] = []
    m = CMath(lines)
    result = helper(m, *(m.value(p) for p in params))
    head = f"__device__ __forceinline__ float {helper.__name__}({', '.join(f'float {p}' for p in params)})"
    if not lines and len(f"{head} {{ return {result.v}; }}") <= 120:
        return f"{head} {{ return {result.v}; }}"
    return "\n".join([head, "{", *(f"    {line}" for line in lines), f"    return {result.v};", "}"])


def helper_definitions() -> str:
    return "\n".join(helper_definition(h) for h in HELPERS) + "\n"


# --- the epilogue of the fused convolutions and GEMMs ---------------------------------------------------------------

Program = tuple[tuple[str, tuple[str, ...]], ...]

#: The activations of the convolution and GEMM epilogues (FusedConv's and FusedGemm's ``activation``), in the order
#: of their codes in ``residual_activation``: each a program of table formulas on the value ``v`` and the results
#: ``s0``, ``s1``, ... of its earlier steps, every step but the last rounded to the element type, as the unfused
#: layers store it.
EPILOGUE_ACTIVATIONS: tuple[tuple[str, Program], ...] = (
    ("", ()),
    ("Relu", (("Relu", ("v",)),)),
    ("Clip", (("Clip", ("v",)),)),
    ("Sigmoid", (("Sigmoid", ("v",)),)),
    ("SiLU", (("Sigmoid", ("v",)), ("Mul", ("v", "s0")))),
)
#: Each activation's code (the kernels' ``act`` argument).
ACTIVATION_CODES: Mapping[str, int] = MappingProxyType({name: code for code, (name, _) in
                                                        enumerate(EPILOGUE_ACTIVATIONS)})
#: The attributes the epilogue's steps take from the kernel's arguments: Clip's bounds.
EPILOGUE_ATTRS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "Clip": MappingProxyType({"max": "hi", "max_from": "value", "min": "lo", "min_from": "value"})})
HEADER = "epilogue.cuh"
COMMAND = "python -m reprobuild.kernels.formulas"


def _activation_lines(program: Program) -> list[str]:
    lines = []
    for k, (op, operands) in enumerate(program):
        expression = c_expression(op, operands, EPILOGUE_ATTRS.get(op, {}))
        lines.append(f"v = {expression};" if k == len(program) - 1 else f"const float s{k} = rnd({expression});")
    return lines


def epilogue_header() -> str:
    """The text of ``epilogue.cuh``: the helpers, and ``residual_activation`` with a branch per activation."""
    codes = ", ".join(f"{code} {name or 'none'}" for code, (name, _) in enumerate(EPILOGUE_ACTIVATIONS))
    body = [f"    if (residual) v = rnd({c_expression('Add', ('v', 'ld(residual[idx])'), {})});"]
    branches = [(code, program) for code, (_, program) in enumerate(EPILOGUE_ACTIVATIONS) if program]
    for i, (code, program) in enumerate(branches):
        body.append(f"    {'if' if i == 0 else '} else if'} (act == {code}) {{")
        body.extend(f"        {line}" for line in _activation_lines(program))
    body += ["    }", "    return v;"]
    return "\n".join([
        f"// Generated by `{COMMAND}` from its formula table (formulas.py): do not edit;",
        "// change the table and rerun the command (a test fails while this file differs from what the table gives).",
        "// The steps after a convolution's or a GEMM's product that a fused kernel runs as it stores each output:",
        "// + a residual, then an activation, each step rounded on its own (to the element type too, in a half or",
        "// bfloat16 build) as the unfused Add and activation layers round them, on dtype.cuh's elem_t, ld and rnd.",
        f"// act: {codes}.",
        "// Clip's bounds are lo and hi; NaN passes through Relu and Clip, as NumPy passes it.",
        "#pragma once",
        '#include "dtype.cuh"',
        "",
        helper_definitions(),
        "__device__ __forceinline__ float residual_activation(float v, const elem_t* residual, long long idx, int act,",
        "                                                     float lo, float hi)",
        "{", *body, "}",
    ]) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=f"Write {HEADER} from the formula table.")
    parser.add_argument("--check", action="store_true", help=f"fail if the committed {HEADER} differs")
    args = parser.parse_args(argv)
    path = Path(str(resources.files("reprobuild.kernels").joinpath(HEADER)))
    text = epilogue_header()
    if args.check:
        if path.read_text(encoding="utf-8") != text:
            print(f"{path} differs from what the formula table gives; run `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One formula per elementwise op, the one home of each: the layers' references (Relu, Elu, Add, Max, Clip, ...)
compute through this table, and ``reprobuild.kernels.formulas`` writes from it the C of the generated fused
elementwise kernels and of the convolution and GEMM epilogues. So the Python reference and the C cannot drift
apart: there is no second copy of a formula to keep equal.

A formula is a Python function of a math namespace ``m`` and its operands. With :class:`XpMath` the operands are
arrays and every operation is the array module's (NumPy on the CPU, CuPy on a GPU) in the operands' own dtype;
Python numbers stay Python numbers, so NumPy 2's weak scalars take the array's dtype (a float32 array times 0.5 is
float32, as the C's ``0.5f``). The C side (``kernels/formulas.py``) runs the same functions with a namespace whose
operations write C text.

``PRIMITIVES`` pairs each C operation with its array-module counterpart, the one place where the two meet; so the C
a formula writes computes what its array evaluation computes, up to the last bits of CUDA's ``expf``/``tanhf``/
``erff``/``powf``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

from reprobuild.core.errors import BuildError
from reprobuild.layers._xp import erf


class Primitive(NamedTuple):
    """One operation of the table: its C template (``{0}``, ``{1}``: the operands) and its array-module form, the
    name of a NumPy/CuPy function (``"add"``) or a function ``(xp, *operands)`` where the two differ."""

    c: str
    xp: str | Callable[..., Any]


#: name -> (C template, array-module form): the one pairing of each C operation with NumPy's and CuPy's.
PRIMITIVES: Mapping[str, Primitive] = MappingProxyType({
    "add": Primitive("__fadd_rn({0}, {1})", "add"), "sub": Primitive("__fsub_rn({0}, {1})", "subtract"),
    "mul": Primitive("__fmul_rn({0}, {1})", "multiply"), "div": Primitive("__fdiv_rn({0}, {1})", "divide"),
    "rcp": Primitive("__frcp_rn({0})", "reciprocal"), "sqrt": Primitive("__fsqrt_rn({0})", "sqrt"),
    "neg": Primitive("(-{0})", "negative"), "abs": Primitive("fabsf({0})", "abs"),
    "ceil": Primitive("ceilf({0})", "ceil"), "floor": Primitive("floorf({0})", "floor"),
    "exp": Primitive("expf({0})", "exp"), "expm1": Primitive("expm1f({0})", "expm1"),
    "log": Primitive("logf({0})", "log"), "log1p": Primitive("log1pf({0})", "log1p"),
    "tanh": Primitive("tanhf({0})", "tanh"), "erf": Primitive("erff({0})", erf),
    "pow": Primitive("powf({0}, {1})", "power"),
    "fmax": Primitive("fmaxf({0}, {1})", "fmax"), "fmin": Primitive("fminf({0}, {1})", "fmin"),
    "lt": Primitive("({0} < {1})", "less"), "gt": Primitive("({0} > {1})", "greater"),
    "ge": Primitive("({0} >= {1})", "greater_equal"), "isnan": Primitive("({0} != {0})", "isnan"),
    "either": Primitive("({0} || {1})", "logical_or"), "where": Primitive("({0} ? {1} : {2})", "where"),
})


class Value:
    """An operand of a formula (an array, or C text), with Python's operators as the table's primitives."""

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


class XpMath(Math):
    """A formula evaluated by an array module (``xp``: numpy or cupy) in its operands' dtype; Python numbers are
    passed as they are (NumPy 2 and CuPy treat them as weak scalars of the array's dtype)."""

    def __init__(self, xp: Any) -> None:
        self.xp = xp

    def value(self, v: Any) -> Value:
        return v if isinstance(v, Value) else Value(self, v)

    def apply(self, name: str, *args: Any) -> Value:
        form = PRIMITIVES[name].xp
        operands = [self.value(a).v for a in args]
        return Value(self, getattr(self.xp, form)(*operands) if isinstance(form, str) else form(self.xp, *operands))

    def call(self, helper: Helper, *args: Any) -> Value:
        form = getattr(helper, "array_form", None)
        if form is None:
            return helper(self, *(self.value(a) for a in args))
        return Value(self, form(self.xp, *(self.value(a).v for a in args)))


# --- helpers: small functions the formulas call by name (defined once in each C text that uses them) -------------

#: Some helpers are one array function, which evaluates them instead of their body (``array_form``): the body is
#: that function written in C, NaN handling included, but for which zero of a +0/-0 pair and which NaN of two comes
#: out, where NumPy's choice depends on the dtype and the CPU's vector loop. Paired like a primitive, so the
#: references keep NumPy's bits. The pairing is an attribute of the helper (not a table of them), so that a
#: formula's identity covers the helpers it calls and no other.


def _maximum0(xp: Any, x: Any) -> Any:
    return xp.maximum(x, 0)


def _clip01(xp: Any, x: Any) -> Any:
    return xp.clip(x, 0, 1)


def _maximum(xp: Any, a: Any, b: Any) -> Any:
    return xp.maximum(a, b)


def _minimum(xp: Any, a: Any, b: Any) -> Any:
    return xp.minimum(a, b)


def array_form(form: Callable[..., Any]) -> Callable[[Helper], Helper]:
    """Pair a helper with the array function that evaluates it (``XpMath.call``)."""

    def pair(helper: Helper) -> Helper:
        helper.array_form = form  # type: ignore[attr-defined]
        return helper

    return pair


@array_form(_maximum0)
def relu(m: Math, x: Value) -> Value:
    """max(x, 0) as NumPy's maximum computes it: NaN stays NaN."""
    return m.where(m.isnan(x), x, m.where(x > 0, x, 0))


@array_form(_clip01)
def clip01(m: Math, x: Value) -> Value:
    """x limited to [0, 1], NaN passed through (as np.clip)."""
    return m.where(m.isnan(x), x, m.fmin(m.fmax(x, 0), 1))


@array_form(_maximum)
def max_nan(m: Math, a: Value, b: Value) -> Value:
    """NumPy's maximum: a NaN in either operand is the result (fmaxf alone would drop it)."""
    return m.where(m.isnan(a) | m.isnan(b), a + b, m.fmax(a, b))


@array_form(_minimum)
def min_nan(m: Math, a: Value, b: Value) -> Value:
    """NumPy's minimum: a NaN in either operand is the result."""
    return m.where(m.isnan(a) | m.isnan(b), a + b, m.fmin(a, b))


def sigmoid(m: Math, x: Value) -> Value:
    """1 / (1 + e^-x), written so that no exponential overflows: e^x / (1 + e^x) for negative x."""
    e = m.let("e", m.exp(-m.abs(x)))
    return m.where(x >= 0, 1 / (1 + e), e / (1 + e))


#: Every helper, in the order the C texts define them.
HELPERS: tuple[Helper, ...] = (relu, clip01, max_nan, min_nan, sigmoid)


# --- the table: op -> formula -------------------------------------------------------------------------------------

#: A formula written out: (m, operands, attributes) -> the result.
Formula = Callable[[Math, Sequence[Value], Mapping[str, Any]], Value]


def _identity(m: Math, x: Sequence[Value], attrs: Mapping[str, Any]) -> Value:
    return x[0]


def _relu(m: Math, x: Sequence[Value], attrs: Mapping[str, Any]) -> Value:
    return m.call(relu, x[0])


def _sigmoid(m: Math, x: Sequence[Value], attrs: Mapping[str, Any]) -> Value:
    return m.call(sigmoid, x[0])


def _max(m: Math, x: Sequence[Value], attrs: Mapping[str, Any]) -> Value:
    return m.call(max_nan, x[0], x[1])


def _min(m: Math, x: Sequence[Value], attrs: Mapping[str, Any]) -> Value:
    return m.call(min_nan, x[0], x[1])


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


#: The formula of every elementwise op that a layer computes through the table and a generated kernel or an
#: epilogue writes as C: a primitive's name (applied to the operands) or a formula written out (which may call a
#: helper). Code reaches an entry by its key (``evaluate``/``apply_formula`` with a literal op), and a tactic's
#: identity covers the entries it reaches, not the whole table (``kernels/code_digest.KEYED``): a new entry changes
#: no existing identity.
FORMULAS: Mapping[str, str | Formula] = MappingProxyType({
    "Abs": "abs", "Add": "add", "Ceil": "ceil", "Clip": _clip, "Div": "div", "Elu": _elu, "Erf": "erf",
    "Exp": "exp", "Floor": "floor", "Gelu": _gelu, "HardSigmoid": _hard_sigmoid, "HardSwish": _hard_swish,
    "Identity": _identity, "LeakyRelu": _leaky_relu, "Log": "log", "Max": _max, "Min": _min, "Mul": "mul",
    "Neg": "neg", "Pow": "pow", "Reciprocal": "rcp", "Relu": _relu, "Sigmoid": _sigmoid, "Softplus": _softplus,
    "Sqrt": "sqrt", "Sub": "sub", "Tanh": "tanh",
})


def apply_formula(m: Math, op: str, operands: Sequence[Value], attrs: Mapping[str, Any]) -> Value:
    """``op``'s formula computed with ``m``."""
    entry = FORMULAS.get(op)
    if entry is None:
        raise BuildError(f"the formula table (reprobuild.layers.formulas) has no formula for {op}; it has "
                         f"{', '.join(sorted(FORMULAS))}")
    if isinstance(entry, str):
        return m.apply(entry, *operands)
    return entry(m, operands, attrs)


def evaluate(xp: Any, op: str, operands: Sequence[Any], attrs: Mapping[str, Any]) -> Any:
    """``op``'s formula on the arrays ``operands``, computed by ``xp`` in their dtype (the caller chooses it: the
    layers widen float16 and bfloat16 to float32 first, as the C does)."""
    m = XpMath(xp)
    return apply_formula(m, op, [m.value(o) for o in operands], attrs).v

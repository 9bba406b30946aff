"""Symbolic dimensions: the sizes of a dynamic engine's axes while it is built, for every shape of its profiles at once.

A model exported with dynamic axes names them (``batch``, ``sequence``); a build with optimization profiles keeps
each such axis as a :class:`SymInt`, an integer polynomial over the axis symbols (``batch*sequence*64``), and
carries it through shape inference, the shape arithmetic the exporters emit (Shape, Gather, Concat, Mul, ...) and
the canonical attributes (a Reshape's target). A layer's shapes and attributes then say what it computes at every
shape in the profiles' ranges; the runtime substitutes the sizes of one run (:func:`substitute`) and checks each
layer through its op's concrete type inference again.

What cannot be decided for every size in the range is refused, never guessed: ``batch == 1`` when the range holds 1
and other sizes, ``sequence // 3``, ``int(batch)``. Comparisons are decided over the symbols' ranges (the hull of
every profile's min and max), which :func:`symbol_ranges` sets for the duration of a build; a decision that holds
over the hull holds in every profile. Polynomials that cancel to a constant come back as plain ``int``, so code
that only ever sees static sizes never sees a SymInt.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any, Union

from reprobuild.core.errors import ModelError

#: A monomial: ((symbol, power), ...) sorted by symbol; () is the constant term.
Monomial = tuple[tuple[str, int], ...]
IntLike = Union[int, "SymInt"]

#: Sizes a symbol may take when no range is set: a dimension is at least 1; 2**31 - 1 bounds every real tensor.
_DEFAULT_RANGE = (1, 2**31 - 1)
_RANGES: contextvars.ContextVar[Mapping[str, tuple[int, int]]] = contextvars.ContextVar(
    "symbol_ranges", default=MappingProxyType({}))

SYMBOL = re.compile(r"[A-Za-z_][A-Za-z0-9_.:]*\Z")


class SymbolicShapeError(ModelError):
    """A size that depends on a dynamic axis was needed as one number, or a comparison of sizes that cannot be
    decided for every size in the profiles' ranges."""


_IDENTICAL_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("identical_only", default=False)


@contextlib.contextmanager
def identical_only() -> Iterator[None]:
    """While the block runs, ``a == b`` of sizes the ranges cannot decide is False rather than an error: equal
    means equal at every size (what a graph pass asks before it rewrites: "is this the same shape?")."""
    token = _IDENTICAL_ONLY.set(True)
    try:
        yield
    finally:
        _IDENTICAL_ONLY.reset(token)


@contextlib.contextmanager
def symbol_ranges(ranges: Mapping[str, tuple[int, int]]) -> Iterator[None]:
    """The range of each symbol while the block runs (a build: the hull of the profiles)."""
    token = _RANGES.set(dict(ranges))
    try:
        yield
    finally:
        _RANGES.reset(token)


def _range(symbol: str) -> tuple[int, int]:
    return _RANGES.get().get(symbol, _DEFAULT_RANGE)


def _mul_monomials(a: Monomial, b: Monomial) -> Monomial:
    powers = dict(a)
    for s, p in b:
        powers[s] = powers.get(s, 0) + p
    return tuple(sorted(powers.items()))


def _div_monomial(a: Monomial, b: Monomial) -> Monomial | None:
    """a / b when b divides a, else None."""
    powers = dict(a)
    for s, p in b:
        left = powers.get(s, 0) - p
        if left < 0:
            return None
        if left:
            powers[s] = left
        else:
            powers.pop(s, None)
    return tuple(sorted(powers.items()))


def _make(terms: Mapping[Monomial, int]) -> IntLike:
    clean = {m: c for m, c in terms.items() if c}
    if not clean:
        return 0
    if set(clean) == {()}:
        return int(clean[()])
    return SymInt._from_terms(clean)


class SymInt:
    """An integer polynomial over dimension symbols; immutable and hashable. Build one with :func:`symbol`."""

    __slots__ = ("_key", "_terms")

    _terms: dict[Monomial, int]
    _key: tuple[tuple[Monomial, int], ...]

    @classmethod
    def _from_terms(cls, terms: Mapping[Monomial, int]) -> SymInt:
        self = object.__new__(cls)
        object.__setattr__(self, "_terms", dict(terms))
        object.__setattr__(self, "_key", tuple(sorted(terms.items())))
        return self

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("SymInt is immutable")

    # --- what it is ----------------------------------------------------------------------------------------------

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(sorted({s for m in self._terms for s, _ in m}))

    def bounds(self) -> tuple[int, int]:
        """(lowest, highest) value over the symbols' ranges (interval arithmetic, term by term)."""
        lo = hi = 0
        for mono, coef in self._terms.items():
            tlo = thi = 1
            for s, p in mono:
                a, b = _range(s)
                tlo, thi = tlo * a**p, thi * b**p  # symbols are >= 1, so each factor is monotone
            if coef >= 0:
                lo, hi = lo + coef * tlo, hi + coef * thi
            else:
                lo, hi = lo + coef * thi, hi + coef * tlo
        return lo, hi

    def evaluate(self, values: Mapping[str, int]) -> int:
        total = 0
        for mono, coef in self._terms.items():
            term = coef
            for s, p in mono:
                if s not in values:
                    raise SymbolicShapeError(f"no size given for the dynamic dimension {s!r}")
                term *= int(values[s]) ** p
            total += term
        return total

    @property
    def degree(self) -> int:
        """The highest total power of a term (``batch*sequence^2``: 3)."""
        return max(sum(p for _, p in mono) for mono in self._terms)

    def __repr__(self) -> str:
        return str(self)

    def __str__(self) -> str:
        parts = []
        for mono, coef in sorted(self._key, key=lambda t: (-sum(p for _, p in t[0]), t[0])):
            factors = "*".join(s if p == 1 else f"{s}^{p}" for s, p in mono)
            if not mono:
                parts.append(str(coef))
            elif coef == 1:
                parts.append(factors)
            elif coef == -1:
                parts.append(f"-{factors}")
            else:
                parts.append(f"{coef}*{factors}")
        return " + ".join(parts).replace("+ -", "- ")

    # --- arithmetic ----------------------------------------------------------------------------------------------

    @staticmethod
    def _terms_of(x: Any) -> dict[Monomial, int] | None:
        if isinstance(x, SymInt):
            return x._terms
        if (isinstance(x, (int,)) and not isinstance(x, bool)) or _is_np_int(x):
            return {(): int(x)}
        return None

    def __add__(self, other: Any) -> Any:
        o = SymInt._terms_of(other)
        if o is None:
            return NotImplemented
        terms = dict(self._terms)
        for m, c in o.items():
            terms[m] = terms.get(m, 0) + c
        return _make(terms)

    __radd__ = __add__

    def __neg__(self) -> IntLike:
        return _make({m: -c for m, c in self._terms.items()})

    def __pos__(self) -> SymInt:
        return self

    def __sub__(self, other: Any) -> Any:
        o = SymInt._terms_of(other)
        if o is None:
            return NotImplemented
        return self + _make({m: -c for m, c in o.items()})

    def __rsub__(self, other: Any) -> Any:
        o = SymInt._terms_of(other)
        if o is None:
            return NotImplemented
        return _make(o) + (-self)

    def __mul__(self, other: Any) -> Any:
        o = SymInt._terms_of(other)
        if o is None:
            return NotImplemented
        terms: dict[Monomial, int] = {}
        for m1, c1 in self._terms.items():
            for m2, c2 in o.items():
                m = _mul_monomials(m1, m2)
                terms[m] = terms.get(m, 0) + c1 * c2
        return _make(terms)

    __rmul__ = __mul__

    def _exact_div(self, other: Any, what: str) -> IntLike:
        o = SymInt._terms_of(other)
        if o is None:
            raise TypeError(f"cannot divide a SymInt by {type(other).__name__}")
        if len(o) == 1:
            (dm, dc), = o.items()
            if dc == 0:
                raise ZeroDivisionError("division of a symbolic size by zero")
            terms: dict[Monomial, int] = {}
            for m, c in self._terms.items():
                q = _div_monomial(m, dm)
                if q is None or c % dc:
                    break
                terms[q] = c // dc
            else:
                return _make(terms)
        raise SymbolicShapeError(f"{self} {what} {_make(o)} does not divide exactly for every size of "
                                 f"{', '.join(self.symbols)}; this dynamic shape needs a size known at build time")

    def __floordiv__(self, other: Any) -> IntLike:
        return self._exact_div(other, "//")

    def __rfloordiv__(self, other: Any) -> IntLike:
        o = SymInt._terms_of(other)
        if o is None:
            return NotImplemented
        if not o:
            return 0
        return _exact_div_of(_make(o), self)

    def __truediv__(self, other: Any) -> Any:
        raise SymbolicShapeError(f"{self} / {other}: a symbolic size divided as a float")

    def __mod__(self, other: Any) -> IntLike:
        self._exact_div(other, "%")
        return 0

    def __rmod__(self, other: Any) -> IntLike:
        if SymInt._terms_of(other) is None:
            return NotImplemented
        if other == 0:
            return 0
        raise SymbolicShapeError(f"{other} % {self}: the remainder depends on the size of {', '.join(self.symbols)}")

    def __rtruediv__(self, other: Any) -> Any:
        raise SymbolicShapeError(f"{other} / {self}: divided by a symbolic size as a float")

    def __pow__(self, exponent: Any) -> IntLike:
        if type(exponent) is not int or exponent < 0:
            raise SymbolicShapeError(f"{self} ** {exponent}: only non-negative integer powers of a symbolic size")
        out: IntLike = 1
        for _ in range(exponent):
            out = out * self
        return out

    # --- comparison (decided over the ranges, or refused) --------------------------------------------------------

    def _sign(self, other: Any) -> tuple[int, int]:
        o = SymInt._terms_of(other)
        if o is None:
            raise TypeError(f"cannot compare a SymInt with {type(other).__name__}")
        diff = self - _make(o)
        return (diff, diff) if isinstance(diff, int) else diff.bounds()

    def _undecided(self, other: Any, op: str) -> SymbolicShapeError:
        ranges = ", ".join(f"{s} in [{_range(s)[0]}, {_range(s)[1]}]" for s in self.symbols)
        return SymbolicShapeError(f"cannot decide {self} {op} {other} for every size of the dynamic dimensions "
                                  f"({ranges}); the model computes differently across the profile's range, so build "
                                  "it for fixed sizes (--input-shape) or a narrower profile")

    def __eq__(self, other: Any) -> Any:
        if isinstance(other, SymInt) and other._key == self._key:
            return True
        if SymInt._terms_of(other) is None:
            return NotImplemented
        lo, hi = self._sign(other)
        if lo > 0 or hi < 0:
            return False
        if lo == hi == 0:
            return True
        if _IDENTICAL_ONLY.get():
            return False
        raise self._undecided(other, "==")

    def __ne__(self, other: Any) -> Any:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __lt__(self, other: Any) -> bool:
        lo, hi = self._sign(other)
        if hi < 0:
            return True
        if lo >= 0:
            return False
        raise self._undecided(other, "<")

    def __le__(self, other: Any) -> bool:
        lo, hi = self._sign(other)
        if hi <= 0:
            return True
        if lo > 0:
            return False
        raise self._undecided(other, "<=")

    def __gt__(self, other: Any) -> bool:
        lo, hi = self._sign(other)
        if lo > 0:
            return True
        if hi <= 0:
            return False
        raise self._undecided(other, ">")

    def __ge__(self, other: Any) -> bool:
        lo, hi = self._sign(other)
        if lo >= 0:
            return True
        if hi < 0:
            return False
        raise self._undecided(other, ">=")

    def __hash__(self) -> int:
        return hash(("SymInt", self._key))

    def __bool__(self) -> bool:
        lo, hi = self.bounds()
        if lo > 0 or hi < 0:
            return True
        raise self._undecided(0, "!=")

    def __int__(self) -> int:
        raise SymbolicShapeError(f"the size {self} depends on the dynamic dimension(s) {', '.join(self.symbols)}, "
                                 "but is needed here as one number when the engine is built")

    __index__ = __int__

    def __float__(self) -> float:
        raise SymbolicShapeError(f"the size {self} depends on the dynamic dimension(s) {', '.join(self.symbols)}, "
                                 "but is needed here as a number when the engine is built")

    def __abs__(self) -> IntLike:
        return self if self >= 0 else -self

    def __reduce__(self) -> Any:  # copy/deepcopy keep it; it is never pickled to a file
        return (SymInt._from_terms, (self._terms,))


def _exact_div_of(a: IntLike, b: SymInt) -> IntLike:
    if isinstance(a, SymInt):
        return a // b
    raise SymbolicShapeError(f"{a} // {b} does not divide exactly for every size of {', '.join(b.symbols)}")


def _is_np_int(x: Any) -> bool:
    return type(x).__module__ == "numpy" and hasattr(x, "dtype") and x.dtype.kind in "iu" and getattr(x, "ndim", 1) == 0


def symbol(name: str) -> SymInt:
    if not SYMBOL.match(name):
        raise SymbolicShapeError(f"{name!r} is not a dimension symbol (letters, digits, '_', '.', ':')")
    return SymInt._from_terms({((name, 1),): 1})


def is_symbolic(value: Any) -> bool:
    """Whether a size, a shape, an attribute value or an array holds a SymInt."""
    if isinstance(value, SymInt):
        return True
    if isinstance(value, (tuple, list)):
        return any(is_symbolic(v) for v in value)
    if isinstance(value, Mapping):
        return any(is_symbolic(v) for v in value.values())
    dtype = getattr(value, "dtype", None)
    if dtype is not None and getattr(dtype, "kind", "") == "O":
        return any(isinstance(v, SymInt) for v in value.reshape(-1).tolist())
    return False


def substitute(value: Any, sizes: Mapping[str, int]) -> Any:
    """``value`` with every SymInt replaced by its value at ``sizes``: a size, a tuple or list of them (nested), a
    mapping's values, or an object array (which comes back as int64)."""
    if isinstance(value, SymInt):
        return value.evaluate(sizes)
    if isinstance(value, tuple):
        return tuple(substitute(v, sizes) for v in value)
    if isinstance(value, list):
        return [substitute(v, sizes) for v in value]
    if isinstance(value, Mapping):
        return {k: substitute(v, sizes) for k, v in value.items()}
    dtype = getattr(value, "dtype", None)
    if dtype is not None and getattr(dtype, "kind", "") == "O":
        import numpy as np

        flat = [v.evaluate(sizes) if isinstance(v, SymInt) else int(v) for v in value.reshape(-1).tolist()]
        return np.asarray(flat, dtype=np.int64).reshape(value.shape)
    return value


def prod(values: Any) -> IntLike:
    """The product of sizes, symbolic or not (``np.prod`` with an int64 dtype refuses a SymInt)."""
    out: IntLike = 1
    for v in values:
        out = out * (v if isinstance(v, SymInt) else int(v))
    return out


def int_array(values: Any) -> Any:
    """An int64 array of sizes, or an object array when any of them is a SymInt (a shape computed from a dynamic
    axis: the exporters' Shape -> Gather -> Concat arithmetic runs on it with NumPy's object arithmetic)."""
    import numpy as np

    items = list(values) if not hasattr(values, "reshape") else values.reshape(-1).tolist()
    shape = np.shape(values)
    if any(isinstance(v, SymInt) for v in items):
        out = np.empty(len(items), dtype=object)
        out[:] = [v if isinstance(v, SymInt) else int(v) for v in items]
        return out.reshape(shape)
    return np.asarray(items, dtype=np.int64).reshape(shape)


def is_symbolic_array(value: Any) -> bool:
    return getattr(getattr(value, "dtype", None), "kind", "") == "O"


def upper(size: Any) -> int:
    """A size at its largest over the symbols' ranges (itself when static)."""
    return size.bounds()[1] if isinstance(size, SymInt) else int(size)


def sizes(value: Any) -> tuple[Any, ...]:
    """A constant (an int64 array, or an object array of sizes) as a tuple of ints and SymInts."""
    import numpy as np

    return tuple(v if isinstance(v, SymInt) else int(v) for v in np.asarray(value).reshape(-1).tolist())


def broadcast(*shapes: Any) -> tuple[Any, ...]:
    """ONNX (NumPy) broadcasting of shapes that may hold SymInts. A 1 takes the other size: a dynamic size
    broadcast against 1 is that size at every value, 1 included. Two sizes that are not 1 must be equal over the
    whole range, else the shapes broadcast at some sizes only (``batch`` against 3), which is refused."""
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for axis in range(rank):
        dims = [s[len(s) - rank + axis] for s in shapes if len(s) - rank + axis >= 0]
        kept = [d for d in dims if isinstance(d, SymInt) or d != 1]
        size = kept[0] if kept else 1
        for d in kept[1:]:
            try:
                same = bool(d == size)
            except SymbolicShapeError:
                same = False
            if not same:
                raise SymbolicShapeError(f"shapes {[list(s) for s in shapes]} do not broadcast for every size of "
                                         f"their dynamic dimensions ({d} against {size})")
        out.append(size)
    return tuple(out)


_FACTOR = re.compile(r"(?:(\d{1,18})|([A-Za-z_][A-Za-z0-9_.:]*)(?:\^([1-8]))?)\Z")


def parse(text: str) -> IntLike:
    """A size written as ``str(SymInt)`` ("3*batch*sequence + 2*batch - 1"), which must be that canonical form
    exactly: an engine file holds its symbolic sizes so, and a crafted one cannot smuggle in another spelling."""
    if not isinstance(text, str) or not 0 < len(text) <= 1024:
        raise SymbolicShapeError("a symbolic size is a non-empty string of at most 1024 characters")
    total: IntLike = 0
    for raw in text.replace(" - ", " + -").split(" + "):
        negative = raw.startswith("-")
        term: IntLike = -1 if negative else 1
        factors = raw[1:] if negative else raw
        if not factors:
            raise SymbolicShapeError(f"{text!r} is not a symbolic size (an empty term)")
        for factor in factors.split("*"):
            match = _FACTOR.match(factor)
            if match is None:
                raise SymbolicShapeError(f"{text!r} is not a symbolic size ({factor!r} is neither an integer nor a "
                                         "symbol with an optional power ^1..^8)")
            number, name, power = match.groups()
            term = term * (int(number) if number is not None else symbol(name) ** int(power or 1))
        total = total + term
    if not isinstance(total, SymInt) or str(total) != text:
        raise SymbolicShapeError(f"{text!r} is not a symbolic size in canonical form"
                                 + (f" (that is {total})" if isinstance(total, SymInt) else " (it is a constant)"))
    return total


def to_text(value: Any) -> Any:
    """Sizes (a size, or a list or tuple of them) with each SymInt as its canonical text, for a file."""
    if isinstance(value, SymInt):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [to_text(v) for v in value]
    return value


def from_text(value: Any) -> Any:
    """The inverse of :func:`to_text`: each string parsed (:func:`parse`)."""
    if isinstance(value, str):
        return parse(value)
    if isinstance(value, list):
        return [from_text(v) for v in value]
    return value

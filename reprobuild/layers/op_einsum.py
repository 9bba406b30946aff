"""Einsum: any equation ``numpy.einsum`` accepts (letters, repeated letters for diagonals, ``...``), computed with
``xp.einsum``.

The canonical attribute is the explicit ``equation`` without spaces (an implicit one gets its output: ``...``
first, then the letters used exactly once, in ASCII order). Dimensions broadcast as in NumPy: a letter's size 1
stretches to its size elsewhere, and ellipses broadcast right-aligned (so they may stand for different numbers of
dimensions, which NumPy allows and ONNX's shape inference does not). ``compute`` broadcasts the operands
explicitly first, so NumPy and CuPy contract the same shapes. float16 and bfloat16 are computed in float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reprobuild.core.dtypes import NUMERIC
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType, broadcast
from reprobuild.layers.families import float_compute_type

_ELLIPSIS = "..."


@dataclass(frozen=True)
class Parsed:
    """An equation checked against operand shapes: its explicit form, each operand's broadcast shape (ellipsis
    padded to the common rank) and the output shape."""

    equation: str
    operand_shapes: tuple[tuple[int, ...], ...]
    output_shape: tuple[int, ...]


def _labels(term: str, where: str) -> tuple[str, str, bool]:
    """(letters before ``...``, letters after it, whether it has one)."""
    before, dots, after = term.partition(_ELLIPSIS)
    for part in (before, after):
        bad = [ch for ch in part if not ("a" <= ch <= "z" or "A" <= ch <= "Z")]
        if bad:
            raise OpError(f"{where} {term!r} has {bad[0]!r}; subscripts are letters a-z, A-Z and one '...'")
    return before, after, bool(dots)


def parse(equation: str, shapes: Sequence[Sequence[int]]) -> Parsed:
    """Check ``equation`` against the operand shapes; an OpError saying what does not fit."""
    eq = equation.replace(" ", "")
    if eq.count("->") > 1:
        raise OpError(f"equation {equation!r} has more than one '->'")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise OpError(f"equation {equation!r} has {len(terms)} input term(s) but the node has {len(shapes)} inputs")
    sizes: dict[str, int] = {}
    ellipses: list[tuple[int, ...]] = []
    counts: dict[str, int] = {}
    parts = []
    for i, (term, shape) in enumerate(zip(terms, shapes)):
        before, after, dots = _labels(term, f"input term {i}")
        letters = before + after
        rank = len(shape)
        if len(letters) > rank or (not dots and len(letters) != rank):
            raise OpError(f"input term {i} {term!r} does not fit input {i} of shape {list(shape)}")
        ell = tuple(shape[len(before):rank - len(after)]) if dots else ()
        if dots:
            ellipses.append(ell)
        dims: dict[str, int] = {}
        for ch, size in zip(letters, (*shape[:len(before)], *shape[rank - len(after):])):
            if dims.setdefault(ch, size) != size:
                raise OpError(f"input term {i} {term!r} repeats {ch!r} over dimensions of sizes {dims[ch]} and {size}")
            counts[ch] = counts.get(ch, 0) + 1
        for ch, size in dims.items():
            known = sizes.setdefault(ch, size)
            if known != size and 1 not in (known, size):
                raise OpError(f"subscript {ch!r} has size {known} in one input and {size} in input {i}")
            sizes[ch] = max(known, size)
        parts.append((before, after, dots, len(ell)))
    try:
        ell_shape = broadcast(*ellipses) if ellipses else ()
    except OpError:
        raise OpError(f"the '...' dimensions {[list(e) for e in ellipses]} do not broadcast (numpy rules)") from None
    if not arrow:
        rhs = (_ELLIPSIS if ellipses else "") + "".join(sorted(ch for ch, n in counts.items() if n == 1))
    out_before, out_after, out_dots = _labels(rhs, "the output term")
    out_letters = out_before + out_after
    for ch in out_letters:
        if ch not in sizes:
            raise OpError(f"output subscript {ch!r} appears in no input term")
    if len(set(out_letters)) != len(out_letters):
        raise OpError(f"the output term {rhs!r} repeats a subscript")
    if ell_shape and not out_dots:
        raise OpError(f"the output term {rhs!r} drops the {len(ell_shape)} dimension(s) '...' stands for; NumPy "
                      "refuses that: keep '...' in the output, or name those dimensions")
    operand_shapes = tuple(
        (*(sizes[ch] for ch in before), *(ell_shape if dots else ()), *(sizes[ch] for ch in after))
        for before, after, dots, _ in parts)
    output = (*(sizes[ch] for ch in out_before), *(ell_shape if out_dots else ()), *(sizes[ch] for ch in out_after))
    return Parsed(f"{lhs}->{rhs}", operand_shapes, tuple(output))


class Einsum(LayerDef):
    op = "Einsum"
    version = 2
    num_inputs = (1, None)
    dtypes = NUMERIC

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        for i, t in enumerate(inputs):
            if t.dtype != inputs[0].dtype:
                raise OpError(f"input {i} has dtype {t.dtype} but input 0 has {inputs[0].dtype}; Einsum needs them "
                              "equal")
        parsed = parse(str(attrs["equation"]), [t.shape for t in inputs])
        return [TensorType(parsed.output_shape, inputs[0].dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        dtype = inputs[0].dtype
        work = float_compute_type(xp, inputs[0])
        parsed = parse(str(attrs["equation"]), [x.shape for x in inputs])
        lhs = parsed.equation.split("->")[0].split(",")
        operands = []
        for term, x, full in zip(lhs, inputs, parsed.operand_shapes):
            x = x.astype(work, copy=False)
            if x.ndim != len(full):  # a shorter '...': insert its missing leading dimensions as 1s
                at = len(term.partition(_ELLIPSIS)[0])
                x = x.reshape(x.shape[:at] + (1,) * (len(full) - x.ndim) + x.shape[at:])
            operands.append(xp.broadcast_to(x, full) if tuple(x.shape) != full else x)
        result = xp.einsum(parsed.equation, *operands)
        return [xp.asarray(result).astype(dtype, copy=False).reshape(parsed.output_shape)]


LAYERS = (Einsum(),)

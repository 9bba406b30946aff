"""The C side of the formula table: the C of the generated fused elementwise kernels and of the convolution and
GEMM epilogues (``epilogue.cuh``), written from ``reprobuild.layers.formulas``, the one home of each elementwise op's
formula, which the layers' references compute through.

A formula run with :class:`CMath` gets C expressions as operands, and every operation writes C: the correctly
rounded intrinsics (``__fadd_rn`` and friends, which the compiler never contracts into an FMA) for + - * / sqrt, and
CUDA's libm for the rest (each primitive's C template in ``PRIMITIVES``); a helper (``sigmoid``, ``relu``, ...) is
called by name and defined once in the text. So the C computes what the reference computes, up to the last bits of
CUDA's ``expf``/``tanhf``/``erff``/``powf`` (and, for the NaN-aware comparisons, which zero of a +0/-0 pair and which
NaN of two comes out). The tests check the C against the reference on a GPU.

``python -m reprobuild.kernels.formulas`` rewrites ``epilogue.cuh`` from the table (``--check``: fail if the
committed file differs); the header is committed so that kernel identities stay computable from the files alone.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from reprobuild.core.errors import BuildError
from reprobuild.layers.formulas import HELPERS, PRIMITIVES, Helper, Math, Value, apply_formula


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
        return Value(self, PRIMITIVES[name].c.format(*(self.value(a).v for a in args)))

    def call(self, helper: Helper, *args: Any) -> Value:
        return Value(self, f"{helper.__name__}({', '.join(str(self.value(a).v) for a in args)})")

    def let(self, name: str, v: Value) -> Value:
        if self.lines is None:
            raise BuildError(f"let {name!r} outside a helper: only a helper's body has lines to hold it")
        self.lines.append(f"const float {name} = {v.v};")
        return Value(self, name)


def c_expression(op: str, operands: Sequence[str], attrs: Mapping[str, Any]) -> str:
    """The C expression of ``op`` on the float C expressions ``operands`` (attributes: numbers become float32
    literals, strings are C expressions, such as a kernel parameter)."""
    m = CMath()
    return str(apply_formula(m, op, [m.value(o) for o in operands], attrs).v)


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

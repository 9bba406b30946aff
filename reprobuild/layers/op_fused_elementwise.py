"""FusedElementwise: a chain of elementwise layers as one layer, made by the ``fuse_elementwise`` pass, never by
ONNX. A CUDA tactic turns its program into one generated kernel; the reference runs each step with the op
definition of the layer it replaced, so on the CPU the fused layer gives the bits of the unfused ones.

The program is the canonical attribute ``steps``, a tuple of strings, one per step; the last step's result is the
layer's output. A step is written ``<op> <operand>... [<key>=<value>...]``, tokens separated by one space:

- ``op``: one of ``STEP_OPS`` (unary ops take one operand, ``BINARY`` ops two);
- an operand: ``0``, ``1``, ... is a layer input, ``s0``, ``s1``, ... the result of an earlier step;
- then the step op's canonical attributes (``STEP_ATTRS``), all of them, sorted by key: an int in decimal, a
  float as its shortest round-trip ``repr`` (``0.01``, ``6.0``, ``1e-05``, ``inf``), a string in double quotes.

So SiLU is ``("Sigmoid 0", "Mul 0 s0")`` and ReLU6 after a bias ``("Add 0 1", 'Clip s0 max=6.0 max_from="value"
min=0.0 min_from="value"')``. Every program has exactly one spelling: ``infer`` refuses text that
``encode_step(parse_step(text))`` would not give back, every input must be read and every step but the last
must be read by a later one, so equal programs are equal attributes (and equal layer signatures).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from reprobuild.core.dtypes import FLOATS
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType, broadcast
from reprobuild.layers.op_activation import Clip, Elu, Gelu, HardSigmoid, HardSwish, LeakyRelu, Relu, Sigmoid, Softplus
from reprobuild.layers.op_arith import Add, Div, Max, Min, Mul, Sub
from reprobuild.layers.op_math import Abs, Ceil, Erf, Exp, Floor, Log, Neg, Pow, Reciprocal, Sqrt, Tanh
from reprobuild.layers.op_tensor import Identity

UNARY: tuple[str, ...] = ("Abs", "Ceil", "Clip", "Elu", "Erf", "Exp", "Floor", "Gelu", "HardSigmoid", "HardSwish",
                          "Identity", "LeakyRelu", "Log", "Neg", "Reciprocal", "Relu", "Sigmoid", "Softplus", "Sqrt",
                          "Tanh")


BINARY: tuple[str, ...] = ("Add", "Div", "Max", "Min", "Mul", "Pow", "Sub")


#: The ops a step may run.
STEP_OPS: tuple[str, ...] = tuple(sorted(UNARY + BINARY))


#: The canonical attributes of each step op that has any (every one of them is written in the step).
STEP_ATTRS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "Clip": ("max", "max_from", "min", "min_from"), "Elu": ("alpha",), "Gelu": ("approximate",),
    "HardSigmoid": ("alpha", "beta"), "LeakyRelu": ("alpha",),
})


_INT = r"-?[0-9]+"


_WORD = r"[A-Za-z0-9_.+-]+"


_STEP_REF = r"s([0-9]+)"


#: An operand: ("in", i) for layer input i, ("step", k) for the result of step k.
Operand = tuple[str, int]


@dataclass(frozen=True)
class Step:
    op: str
    operands: tuple[Operand, ...]
    attrs: tuple[tuple[str, Any], ...] = ()

    @property
    def attributes(self) -> dict[str, Any]:
        return dict(self.attrs)


def encode_value(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise OpError(f"attribute value {value!r} cannot be written in a step; steps hold ints, floats and words")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if not re.fullmatch(_WORD, value):
        raise OpError(f"string attribute {value!r} cannot be written in a step (letters, digits and _.+- only)")
    return f'"{value}"'


def parse_value(text: str) -> int | float | str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    if re.fullmatch(_INT, text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        raise OpError(f"attribute value {text!r} is neither an int, a float nor a quoted word") from None


def encode_operand(operand: Operand) -> str:
    kind, index = operand
    return str(index) if kind == "in" else f"s{index}"


def encode_step(step: Step) -> str:
    """The one spelling of a step (see the module docstring)."""
    attrs = [f"{key}={encode_value(value)}" for key, value in sorted(step.attrs)]
    return " ".join([step.op, *(encode_operand(o) for o in step.operands), *attrs])


def parse_step(text: str) -> Step:
    if not isinstance(text, str) or not text:
        raise OpError(f"step {text!r} is not a non-empty string")
    op, *tokens = text.split(" ")
    operands: list[Operand] = []
    attrs: list[tuple[str, Any]] = []
    for token in tokens:
        if "=" in token:
            key, _, value = token.partition("=")
            attrs.append((key, parse_value(value)))
        elif attrs:
            raise OpError(f"step {text!r}: operand {token!r} after an attribute; attributes come last")
        elif re.fullmatch(_INT, token) and not token.startswith("-"):
            operands.append(("in", int(token)))
        elif (ref := re.fullmatch(_STEP_REF, token)) is not None:
            operands.append(("step", int(ref.group(1))))
        else:
            raise OpError(f"step {text!r}: {token!r} is neither an input (0, 1, ...) nor a step (s0, s1, ...)")
    return Step(op, tuple(operands), tuple(attrs))


def parse_program(steps: Any, num_inputs: int) -> tuple[Step, ...]:
    """The steps of a program, checked: known ops with their operand counts and attributes, operands that exist,
    every input read, every step but the last read later, and the canonical spelling."""
    if not isinstance(steps, tuple) or not steps:
        raise OpError(f"steps is {steps!r}; it must be a non-empty tuple of strings")
    program = tuple(parse_step(text) for text in steps)
    read_inputs: set[int] = set()
    read_steps: set[int] = set()
    for k, (text, step) in enumerate(zip(steps, program)):
        where = f"step {k} ({text!r})"
        if step.op not in STEP_OPS:
            raise OpError(f"{where}: op {step.op} cannot be a step; steps run {', '.join(STEP_OPS)}")
        arity = 2 if step.op in BINARY else 1
        if len(step.operands) != arity:
            raise OpError(f"{where}: {step.op} takes {arity} operand(s), not {len(step.operands)}")
        keys = tuple(key for key, _ in step.attrs)
        if keys != STEP_ATTRS.get(step.op, ()):
            raise OpError(f"{where}: {step.op} needs exactly the attributes {list(STEP_ATTRS.get(step.op, ()))}, "
                          f"sorted; it has {list(keys)}")
        for kind, index in step.operands:
            if kind == "in" and index >= num_inputs:
                raise OpError(f"{where}: reads input {index}, but the layer has {num_inputs} input(s)")
            if kind == "step" and index >= k:
                raise OpError(f"{where}: reads step s{index}, which is not an earlier step")
            (read_inputs if kind == "in" else read_steps).add(index)
        if encode_step(step) != text:
            raise OpError(f"{where} is not written canonically; it should read {encode_step(step)!r}")
    unread = [i for i in range(num_inputs) if i not in read_inputs]
    if unread:
        raise OpError(f"inputs {unread} are read by no step")
    dead = [k for k in range(len(program) - 1) if k not in read_steps]
    if dead:
        raise OpError(f"the results of steps {dead} are read by no later step; only the last step is the output")
    return program


#: The definition of each op a step may run (``STEP_OPS``; ``parse_program`` refuses any other).
_STEP_DEFINITIONS: dict[str, LayerDef] = {
    cls.op: cls() for cls in (Abs, Add, Ceil, Clip, Div, Elu, Erf, Exp, Floor, Gelu, HardSigmoid, HardSwish, Identity,
                              LeakyRelu, Log, Max, Min, Mul, Neg, Pow, Reciprocal, Relu, Sigmoid, Softplus, Sqrt, Sub,
                              Tanh)}


def step_definition(op: str) -> LayerDef:
    """The definition of a step's op, refused unless it is one of the ops a step may run."""
    opdef = _STEP_DEFINITIONS.get(op)
    if opdef is None:
        raise OpError(f"op {op} cannot be a step of a FusedElementwise")
    return opdef


class FusedElementwise(LayerDef):
    op = "FusedElementwise"
    # 2: the ops it builds on are imported, not looked up in the registry (same results)
    version = 3  # 3: the ops it builds on compute through the formula table (layers/formulas.py); the same bits
    num_inputs = (1, None)
    dtypes = FLOATS
    ops_by_name = STEP_OPS

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        if not inputs:
            raise OpError("FusedElementwise needs at least one input")
        self.check_types(inputs)
        dtype = inputs[0].dtype
        for i, t in enumerate(inputs):
            if t.dtype != dtype:
                raise OpError(f"input {i} has dtype {t.dtype} but input 0 has {dtype}; a fused program has one dtype")
        program = parse_program(attrs.get("steps"), len(inputs))
        types: list[TensorType] = []
        for k, step in enumerate(program):
            args = [inputs[i] if kind == "in" else types[i] for kind, i in step.operands]
            try:
                (out,) = step_definition(step.op).infer(step.attributes, args)[:1]
            except OpError as exc:
                raise OpError(f"step {k} ({encode_step(step)!r}): {exc}") from None
            if out.dtype != dtype:
                raise OpError(f"step {k} ({encode_step(step)!r}) gives {out.dtype}; a fused program has one dtype")
            types.append(out)
        shape = broadcast(*(t.shape for t in inputs))
        if types[-1].shape != shape:
            raise OpError(f"the program's output has shape {list(types[-1].shape)}, but its inputs broadcast to "
                          f"{list(shape)}")
        return [types[-1]]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        program = parse_program(attrs["steps"], len(inputs))
        values: list[Any] = []
        for step in program:
            args = [inputs[i] if kind == "in" else values[i] for kind, i in step.operands]
            values.append(step_definition(step.op).compute(xp, step.attributes, *args)[0])
        return [values[-1]]


LAYERS = (FusedElementwise(),)

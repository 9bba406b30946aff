"""Family base classes: what layers that differ only in a formula share (shape and dtype rules, the upcast of half
precision).

A unary elementwise layer is then a few lines (and its op, in ``reprobuild/ops``, two more)::

    class Exp(Unary):
        op, dtypes = "Exp", FLOATS

        def fn(self, xp, x, attrs):
            return xp.exp(x)
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from reprobuild.core.dtypes import FLOATS, NUMERIC
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType, broadcast


def float_compute_type(xp: Any, x: Any) -> Any:
    """float16 and bfloat16 are computed in float32 (then rounded once); other types as they are."""
    return xp.float32 if str(x.dtype) in ("float16", "bfloat16") else x.dtype


class Unary(LayerDef):
    """One input, one output of the same shape; the dtype is the input's unless ``out_dtype`` says otherwise.

    ``fn`` gets the input as is; ``upcast`` (the default for float ops) first widens float16 and bfloat16 to
    float32 and rounds the result back, so half-precision results are the correctly rounded float32 ones."""

    dtypes: ClassVar[tuple[str, ...]] = FLOATS
    out_dtype: ClassVar[str | None] = None
    upcast: ClassVar[bool] = True

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        return [TensorType(inputs[0].shape, self.out_dtype or inputs[0].dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x = inputs[0]
        out_dtype = self.out_dtype or x.dtype
        if self.upcast and str(x.dtype) in ("float16", "bfloat16"):
            x = x.astype(xp.float32)
        return [xp.asarray(self.fn(xp, x, attrs)).astype(out_dtype, copy=False)]

    @abstractmethod
    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        """The formula, elementwise."""


class Binary(LayerDef):
    """Two inputs of one dtype, broadcast (numpy rules); the output has their dtype or ``out_dtype``."""

    num_inputs = (2, 2)
    same_type = (1,)
    dtypes: ClassVar[tuple[str, ...]] = NUMERIC
    out_dtype: ClassVar[str | None] = None
    upcast: ClassVar[bool] = True

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        return [TensorType(broadcast(inputs[0].shape, inputs[1].shape), self.out_dtype or inputs[0].dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        a, b = inputs
        out_dtype = self.out_dtype or a.dtype
        if self.upcast and str(a.dtype) in ("float16", "bfloat16"):
            a, b = a.astype(xp.float32), b.astype(xp.float32)
        return [xp.asarray(self.fn(xp, a, b, attrs)).astype(out_dtype, copy=False)]

    @abstractmethod
    def fn(self, xp: Any, a: Any, b: Any, attrs: Attrs) -> Any:
        """The formula, elementwise on broadcast operands."""


class Variadic(LayerDef):
    """One or more inputs of one dtype, broadcast together and folded left to right with ``fn``."""

    num_inputs = (1, None)
    dtypes: ClassVar[tuple[str, ...]] = NUMERIC

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        for i, t in enumerate(inputs):
            if t.dtype != inputs[0].dtype:
                raise OpError(f"input {i} has dtype {t.dtype} but input 0 has {inputs[0].dtype}")
        return [TensorType(broadcast(*(t.shape for t in inputs)), inputs[0].dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        dtype = inputs[0].dtype
        shape = broadcast(*(x.shape for x in inputs))
        work = float_compute_type(xp, inputs[0])
        acc = xp.broadcast_to(inputs[0].astype(work, copy=False), shape)
        for x in inputs[1:]:
            acc = self.fn(xp, acc, x.astype(work, copy=False))
        return [self.finish(xp, acc, len(inputs)).astype(dtype, copy=False)]

    def finish(self, xp: Any, acc: Any, count: int) -> Any:
        return xp.array(acc)

    @abstractmethod
    def fn(self, xp: Any, acc: Any, x: Any) -> Any: ...

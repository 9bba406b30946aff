"""Activations: one formula each, elementwise."""

from __future__ import annotations

from typing import Any

from reprobuild.dtypes import FLOATS, SIGNED
from reprobuild.ops.base import Attrs
from reprobuild.ops.families import Unary


class Relu(Unary):
    op, versions, dtypes = "Relu", (6, 13, 14), (*FLOATS, *SIGNED)
    upcast = False

    def fn(self, xp: Any, x: Any, attrs: Attrs) -> Any:
        return xp.maximum(x, x.dtype.type(0))


OPS = (Relu(),)

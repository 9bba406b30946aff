"""Clip: the input limited to [min, max], where each bound may be missing.

ONNX gives the bounds three ways: attributes before opset 11 (defaulting to float32's lowest and largest from
opset 6), optional scalar inputs from opset 11 (either one may be omitted, ``min`` in the middle too), and those
inputs may be constants or computed at run time. Every form becomes one canonical layer: ``min_from`` and
``max_from`` say where each bound comes from ("none"; "value": the ``min``/``max`` attribute; "input": a layer
input, after ``x`` and in the order min, max), and ``min``/``max`` hold the value (0 unless "value").

A min of -inf or a max of +inf clips nothing and is "none". When min > max every element becomes max (ONNX:
``min(max(x, min), max)``). NaN propagates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from reprobuild.core.dtypes import INTEGERS, NUMERIC
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType
from reprobuild.layers.families import float_compute_type
from reprobuild.layers.formulas import evaluate

_SOURCES = ("none", "value", "input")


_BOUNDS = ((1, "min"), (2, "max"))


class Clip(LayerDef):
    op = "Clip"
    # 2: its attributes come from onnx_attributes.json (the same ones)
    version = 3  # 3: computes through the formula table (layers/formulas.py); the same bits
    num_inputs = (1, 3)
    dtypes = NUMERIC

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        sources = [attrs[f"{key}_from"] for _, key in _BOUNDS]
        if any(s not in _SOURCES for s in sources):
            raise OpError(f"min_from/max_from are {sources}; each must be one of {', '.join(_SOURCES)}")
        wanted = 1 + sources.count("input")
        if len(inputs) != wanted:
            raise OpError(f"has {len(inputs)} inputs, but min_from/max_from = {sources} need {wanted}")
        if inputs[0].dtype in INTEGERS:
            info = np.iinfo(inputs[0].dtype)
            for _, key in _BOUNDS:
                value = attrs[key]
                if attrs[f"{key}_from"] == "value" and not (isinstance(value, int) and info.min <= value <= info.max):
                    raise OpError(f"{key} = {value!r} is not a value of the input's dtype {inputs[0].dtype}")
        for i, t in enumerate(inputs[1:], 1):
            if t.dtype != inputs[0].dtype or t.size != 1:
                raise OpError(f"bound input {i} is {list(t.shape)} {t.dtype}; Clip's bounds are scalars of the "
                              f"input's dtype ({inputs[0].dtype})")
        return [TensorType(inputs[0].shape, inputs[0].dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        """The table's Clip formula, with each bound (an attribute or an input) as a scalar of the working type."""
        x, given = inputs[0], list(inputs[1:])
        work = float_compute_type(xp, x)
        bounds: dict[str, Any] = {}
        for _, key in _BOUNDS:
            source = attrs[f"{key}_from"]
            bounds[f"{key}_from"] = "none" if source == "none" else "value"
            bounds[key] = None if source == "none" else \
                given.pop(0).reshape(()).astype(work) if source == "input" else xp.asarray(attrs[key], work)
        y = evaluate(xp, "Clip", [x.astype(work, copy=True)], bounds)
        return [xp.asarray(y).astype(x.dtype, copy=False)]

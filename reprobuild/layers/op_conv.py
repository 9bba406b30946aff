"""Conv: 1-D, 2-D and 3-D convolution with pads (auto_pad resolved), strides, dilations, groups, optional bias.

Canonical attributes: ``pads`` (begins, then ends), ``strides``, ``dilations``, ``group``. The weight and bias
may be constants or run-time inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from reprobuild.core.dtypes import FLOATS
from reprobuild.layers._window import output_spatial, padded, tap_view, taps
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType
from reprobuild.layers.families import float_compute_type


class Conv(LayerDef):
    op = "Conv"
    version = 2
    num_inputs = (2, 3)
    dtypes = FLOATS
    same_type = (1, 2)

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        x, w = inputs[0].shape, inputs[1].shape
        group = int(attrs["group"])
        if len(x) < 3 or len(w) != len(x):
            raise OpError(f"needs input and weight of equal rank >= 3; got {list(x)} and {list(w)}")
        if group < 1 or x[1] != w[1] * group:
            raise OpError(f"input has {x[1]} channels but weight {list(w)} with group={group} expects {w[1] * group}")
        if w[0] % group:
            raise OpError(f"{w[0]} output channels are not divisible by group={group}")
        if len(inputs) > 2 and inputs[2].shape != (w[0],):
            raise OpError(f"bias has shape {list(inputs[2].shape)}, expected [{w[0]}]")
        return [TensorType((x[0], w[0], *output_spatial(x[2:], w[2:], attrs)), inputs[0].dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        return [conv_nd(xp, inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None, attrs)]


def conv_nd(xp: Any, x: Any, w: Any, b: Any, attrs: Attrs) -> Any:
    """im2col over every kernel tap, then one matrix product per group; float16/bfloat16 computed in float32."""
    dtype, work = x.dtype, float_compute_type(xp, x)
    x, w = x.astype(work, copy=False), w.astype(work, copy=False)
    n, c, spatial = x.shape[0], x.shape[1], x.shape[2:]
    m, cg, kernel = w.shape[0], w.shape[1], w.shape[2:]
    group = int(attrs["group"])
    out = output_spatial(spatial, kernel, attrs)
    pixels, k = int(np.prod(out, dtype=np.int64)), len(taps(kernel))
    src = padded(xp, x, attrs["pads"], (0,) * len(spatial), 0.0)
    cols = xp.empty((n, c, k, pixels), dtype=work)
    for t, tap in enumerate(taps(kernel)):
        cols[:, :, t, :] = tap_view(src, tap, attrs["strides"], attrs["dilations"], out).reshape(n, c, pixels)
    result = xp.matmul(w.reshape(group, m // group, cg * k), cols.reshape(n, group, cg * k, pixels))
    result = result.reshape((n, m, *out))
    if b is not None:
        result = result + b.astype(work, copy=False).reshape((1, m) + (1,) * len(out))
    return result.astype(dtype, copy=False)


LAYERS = (Conv(),)

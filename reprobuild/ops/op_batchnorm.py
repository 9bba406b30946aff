"""BatchNormalization in inference mode: y = (x - mean) / sqrt(var + epsilon) * scale + bias, per channel.

Training mode (``training_mode=1``, or the running-statistics outputs) is refused: reprobuild builds inference
engines. The parameters may be constants or run-time inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reprobuild.core.dtypes import FLOATS
from reprobuild.ops.base import Attr, Attrs, Node, OpDef, OpError, TensorType


class BatchNormalization(OpDef):
    op, versions = "BatchNormalization", (7, 9, 14, 15)
    version = 2
    # The doubles 1e-5 and 0.9, not ONNX's float32 defaults widened (9.999999747378752e-06, 0.8999999761581421):
    # convert writes the default into every layer, so changing it would change each BatchNormalization layer's
    # signature and the weights the folding pass computes.
    attribute_overrides = {"epsilon": Attr("float", 1e-5), "momentum": Attr("float", 0.9)}
    num_inputs = (5, 5)
    num_outputs = (1, 5)
    dtypes = FLOATS

    def convert(self, node: Node) -> None:
        if node.version >= 14 and int(node.attr("training_mode")):
            raise node.fail("training_mode=1 is not supported; reprobuild builds inference engines")
        if node.version < 9 and int(node.attr("spatial")) != 1:
            raise node.fail("spatial=0 is not supported")
        if any(node.output_used(i) for i in range(1, node.num_outputs)):
            raise node.fail("only the first output (Y) may be used; the running mean/variance outputs are "
                            "training-only")
        node.emit({"epsilon": float(node.attr("epsilon"))}, n_outputs=1)

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        x = inputs[0].shape
        if len(x) < 2:
            raise OpError(f"needs an input of rank >= 2 (N, C, ...); got {list(x)}")
        for i, t in enumerate(inputs[1:], 1):
            if t.shape != (x[1],):
                raise OpError(f"input {i} has shape {list(t.shape)}; it should be [{x[1]}], one value per channel")
            if t.dtype not in FLOATS:
                raise OpError(f"input {i} has dtype {t.dtype}; a float type is needed")
        return [TensorType(x, inputs[0].dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x, scale, bias, mean, var = inputs
        shape = (1, -1) + (1,) * (x.ndim - 2)
        p = [v.astype(xp.float64).reshape(shape) for v in (scale, bias, mean, var)]
        s = p[0] / xp.sqrt(p[3] + attrs["epsilon"])
        t = p[1] - p[2] * s
        work = xp.float64 if x.dtype == xp.float64 else xp.float32
        y = x.astype(work, copy=False) * s.astype(work) + t.astype(work)
        return [y.astype(x.dtype, copy=False)]


OPS = (BatchNormalization(),)

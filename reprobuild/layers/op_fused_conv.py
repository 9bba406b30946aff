"""FusedConv: a convolution with its epilogue, made by the ``fuse_conv_epilogue`` pass, never by ONNX.

y = activation(Conv(x, W, B) + R): the bias ``B`` is always present (the pass adds zeros when the Conv had none),
the residual ``R`` (input 3) is optional, and ``activation`` is one of ``""`` (none), ``Relu``, ``Clip``
(``activation_min``/``activation_max``), ``Sigmoid`` or ``SiLU`` (y * sigmoid(y)). The reference computes each
step with the op definition of the layer it replaced (Conv, Add, Relu, Clip, Sigmoid, Mul), so on the CPU the
fused layer gives the bits of the unfused ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reprobuild.core.dtypes import FLOATS
from reprobuild.layers._activation_clip import Clip
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType
from reprobuild.layers.op_activation import Relu, Sigmoid
from reprobuild.layers.op_arith import Add, Mul
from reprobuild.layers.op_conv import Conv, conv_nd

ACTIVATIONS = ("", "Clip", "Relu", "SiLU", "Sigmoid")


def check_activation(attrs: Attrs) -> None:
    """An epilogue's activation is one the kernels know."""
    if attrs.get("activation", "") not in ACTIVATIONS:
        raise OpError(f"activation {attrs.get('activation')!r} is not one of {', '.join(map(repr, ACTIVATIONS))}")


class FusedConv(LayerDef):
    op = "FusedConv"
    # 2: the ops it builds on are imported, not looked up in the registry (same results)
    version = 3  # 3: the ops it builds on compute through the formula table (layers/formulas.py); the same bits
    num_inputs = (3, 4)
    dtypes = FLOATS
    same_type = (1, 2, 3)

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        check_activation(attrs)
        (out,) = Conv().infer(attrs, inputs[:3])
        self.check_types(inputs)
        if len(inputs) > 3 and inputs[3].shape != out.shape:
            raise OpError(f"the residual has shape {list(inputs[3].shape)}; the convolution's output is "
                          f"{list(out.shape)}")
        return [out]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        y = conv_nd(xp, inputs[0], inputs[1], inputs[2], attrs)
        return [epilogue(xp, attrs, y, inputs[3] if len(inputs) > 3 else None)]


#: The layer definitions of the layers an epilogue replaces (a residual Add, the activations, SiLU's Mul).
_ADD, _CLIP, _MUL, _RELU, _SIGMOID = Add(), Clip(), Mul(), Relu(), Sigmoid()


def epilogue(xp: Any, attrs: Attrs, y: Any, residual: Any) -> Any:
    """What follows the biased convolution ``y``: + residual, then the activation, each step computed with the
    op definition of the layer it replaced (the CPU tactics apply it too, so they give the unfused bits)."""
    if residual is not None:
        (y,) = _ADD.compute(xp, {}, y, residual)
    activation = attrs.get("activation", "")
    if activation == "Relu":
        (y,) = _RELU.compute(xp, {}, y)
    elif activation == "Clip":
        bounds = {"min": attrs["activation_min"], "max": attrs["activation_max"], "min_from": "value",
                  "max_from": "value"}
        (y,) = _CLIP.compute(xp, bounds, y)
    elif activation in ("Sigmoid", "SiLU"):
        (s,) = _SIGMOID.compute(xp, {}, y)
        y = s if activation == "Sigmoid" else _MUL.compute(xp, {}, y, s)[0]
    return y


LAYERS = (FusedConv(),)

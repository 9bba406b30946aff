"""The ONNX half of :mod:`reprobuild.layers.op_convtranspose` (whose docstring says what the layers compute): the ONNX
versions each op implements, their attributes, and how a node becomes the canonical layer.
"""

from __future__ import annotations

from collections.abc import Sequence

from reprobuild.layers import op_convtranspose as layer
from reprobuild.layers.base import OpError, ints
from reprobuild.ops.base import Node, OpDef


def _per_dim(node: Node, key: str, nd: int, default: int) -> tuple[int, ...]:
    values = ints(node.attr(key)) if node.has_attr(key) else (default,) * nd
    if len(values) != nd:
        raise OpError(f"{key} {list(values)} should have {nd} values, one per spatial dimension")
    return values


class ConvTranspose(OpDef, layer.ConvTranspose):
    versions = (1, 11, 22)

    def convert(self, node: Node) -> None:
        x, w = node.input(0), node.input(1)
        assert x is not None and w is not None
        if x.rank < 3 or w.rank != x.rank:
            raise node.fail(f"needs input and weight of equal rank >= 3 (N, C, spatial...); got {list(x.shape)} "
                            f"and {list(w.shape)}")
        nd, kernel = x.rank - 2, w.shape[2:]
        if min(kernel) < 1 or min(x.shape[2:]) < 1:
            raise node.fail(f"empty kernel or input: weight {list(w.shape)}, input {list(x.shape)}")
        if node.has_attr("kernel_shape") and ints(node.attr("kernel_shape")) != tuple(kernel):
            raise node.fail(f"kernel_shape {list(ints(node.attr('kernel_shape')))} does not match the weight's "
                            f"spatial shape {list(kernel)}")
        strides = _per_dim(node, "strides", nd, 1)
        dilations = _per_dim(node, "dilations", nd, 1)
        output_padding = list(_per_dim(node, "output_padding", nd, 0))
        explicit = ints(node.attr("pads")) if node.has_attr("pads") else None
        if explicit is not None and len(explicit) != 2 * nd:
            raise node.fail(f"pads {list(explicit)} should have {2 * nd} values (begins, then ends)")
        if min(strides) < 1 or min(dilations) < 1 or min(output_padding) < 0 or min(explicit or (0,)) < 0:
            raise node.fail(f"invalid window: strides {list(strides)}, dilations {list(dilations)}, output_padding "
                            f"{output_padding}, pads {list(explicit or ())}")
        auto_pad = node.attr("auto_pad")
        if auto_pad not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
            raise node.fail(f"auto_pad={auto_pad!r} is not one of NOTSET, VALID, SAME_UPPER, SAME_LOWER")
        target = self._output_shape(node, x.shape, w.shape[1] * int(node.attr("group")))
        begin, end = [0] * nd, [0] * nd
        for i in range(nd):
            full = strides[i] * (x.shape[2 + i] - 1) + output_padding[i] + dilations[i] * (kernel[i] - 1) + 1
            if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
                total = full - (target[i] if target is not None else x.shape[2 + i] * strides[i])
                if total < 0:
                    raise node.fail(f"auto_pad={auto_pad} needs a negative padding ({total}) along spatial "
                                    f"dimension {i}: the ONNX reference shifts the output, onnxruntime does not; "
                                    "give explicit pads and output_padding instead")
                small, large = total // 2, total - total // 2
                begin[i], end[i] = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
            elif target is None:
                if auto_pad == "NOTSET" and explicit is not None:
                    begin[i], end[i] = explicit[i], explicit[nd + i]
            else:
                begin[i], end[i], output_padding[i] = self._pads_for_shape(
                    node, i, full, target[i], output_padding[i],
                    None if explicit is None or auto_pad == "VALID" else (explicit[i], explicit[nd + i]))
        node.emit({"dilations": dilations, "group": int(node.attr("group")), "output_padding": tuple(output_padding),
                   "pads": (*begin, *end), "strides": strides})

    @staticmethod
    def _output_shape(node: Node, x_shape: Sequence[int], channels: int) -> tuple[int, ...] | None:
        if not node.has_attr("output_shape"):
            return None
        shape, nd = ints(node.attr("output_shape")), len(x_shape) - 2
        if len(shape) == nd + 2 and shape[:2] == (x_shape[0], channels):  # the whole shape, as onnxruntime takes
            shape = shape[2:]
        if len(shape) != nd or min(shape) < 1:
            raise node.fail(f"output_shape {list(ints(node.attr('output_shape')))} should hold {nd} positive "
                            "spatial sizes")
        return shape

    @staticmethod
    def _pads_for_shape(node: Node, i: int, full: int, target: int, output_padding: int,
                        explicit: tuple[int, int] | None) -> tuple[int, int, int]:
        """(pad_begin, pad_end, output_padding) that give ``target`` along spatial dimension ``i``."""
        total = full - target
        if total <= 0 and explicit in (None, (0, 0)):
            return 0, 0, output_padding - total  # a larger output is zeros at the end
        if total > 0 and total % 2 == 0 and explicit in (None, (total // 2, total // 2)):
            return total // 2, total // 2, output_padding
        if explicit not in (None, (0, 0)):
            raise node.fail(f"output_shape asks for {target} along spatial dimension {i} but pads {list(explicit)} "
                            f"give {full - sum(explicit)}; the ONNX spec ignores the pads there, its reference "
                            "uses them: drop one of the two")
        raise node.fail(f"output_shape asks for {target} along spatial dimension {i}, cropping an odd {total} from "
                        f"the full output {full}: the ONNX spec crops the extra element at the beginning, "
                        "onnxruntime at the end; give explicit pads instead")


class Col2Im(OpDef, layer.Col2Im):
    versions = (18,)

    def convert(self, node: Node) -> None:
        image = ints(node.static(1, "image_shape"))
        block = ints(node.static(2, "block_shape"))
        nd = len(image)
        if nd < 1 or len(block) != nd:
            raise node.fail(f"image_shape {list(image)} and block_shape {list(block)} should have the same number "
                            "(>= 1) of spatial dimensions")
        pads = ints(node.attr("pads")) if node.has_attr("pads") else (0,) * (2 * nd)
        attrs = {"block_shape": block, "dilations": _per_dim(node, "dilations", nd, 1), "image_shape": image,
                 "pads": pads, "strides": _per_dim(node, "strides", nd, 1)}
        if len(pads) != 2 * nd:
            raise node.fail(f"pads {list(pads)} should have {2 * nd} values (begins, then ends)")
        if min(image) < 1 or min(block) < 1 or min(pads) < 0 or min(attrs["strides"]) < 1 \
                or min(attrs["dilations"]) < 1:
            raise node.fail(f"invalid window: {attrs}")
        node.emit(attrs, inputs=[0])


class DeformConv(OpDef, layer.DeformConv):
    versions = (19, 22)

    def convert(self, node: Node) -> None:
        x, w = node.input(0), node.input(1)
        assert x is not None and w is not None
        if x.rank != 4 or w.rank != 4:
            raise node.fail(f"only 2-D DeformConv (rank-4 input and weight) is supported; got {list(x.shape)} and "
                            f"{list(w.shape)}")
        if min(w.shape[2:]) < 1 or min(x.shape[2:]) < 1:
            raise node.fail(f"empty kernel or input: weight {list(w.shape)}, input {list(x.shape)}")
        if node.has_attr("kernel_shape") and ints(node.attr("kernel_shape")) != tuple(w.shape[2:]):
            raise node.fail(f"kernel_shape {list(ints(node.attr('kernel_shape')))} does not match the weight's "
                            f"spatial shape {list(w.shape[2:])}")
        pads = ints(node.attr("pads")) if node.has_attr("pads") else (0,) * 4
        strides, dilations = _per_dim(node, "strides", 2, 1), _per_dim(node, "dilations", 2, 1)
        if len(pads) != 4 or min(pads) < 0 or min(strides) < 1 or min(dilations) < 1:
            raise node.fail(f"invalid window: pads {list(pads)}, strides {list(strides)}, dilations "
                            f"{list(dilations)}")
        node.emit({"dilations": dilations, "group": int(node.attr("group")),
                   "has_mask": int(node.input(4) is not None), "offset_group": int(node.attr("offset_group")),
                   "pads": pads, "strides": strides}, inputs=[i for i in range(5) if node.input(i) is not None])


OPS = (Col2Im(), ConvTranspose(), DeformConv())

"""Transposed and sampled convolutions: ConvTranspose (1-D to 3-D), Col2Im, DeformConv (2-D).

ConvTranspose is a matrix product per group (weight^T times input: one column per kernel tap and input pixel)
followed by col2im, which adds the columns into the output image tap by tap (see ``_nn_col2im``). Its canonical
attributes are ``strides``, ``dilations``, ``group``, ``pads`` (begins, then ends; what is cropped off the full
output) and ``output_padding`` (zeros added at the end), both non-negative, so that each output dimension is
``stride * (in - 1) + output_padding + dilation * (kernel - 1) + 1 - pad_begin - pad_end``. ``auto_pad`` and
``output_shape`` are resolved into them.

Where ONNX's forms are ambiguous, reprobuild refuses rather than pick one: an ``output_shape`` that needs an odd
total padding (the spec puts the extra element at the beginning, onnxruntime at the end) or that contradicts
explicit ``pads`` (the spec ignores the pads, the ONNX reference uses them), and SAME padding whose total is
negative (the reference shifts the output, onnxruntime does not).

Col2Im is col2im alone, with ``image_shape`` and ``block_shape`` (inputs) made attributes. DeformConv samples
the input at offset positions (``_nn_deform``) and multiplies like Conv.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from reprobuild.core.dtypes import FLOATS, NUMERIC
from reprobuild.ops._nn_col2im import blocks_along, col2im
from reprobuild.ops._nn_deform import deform_columns
from reprobuild.ops._window import output_spatial
from reprobuild.ops.base import Attrs, Node, OpDef, OpError, TensorType, ints
from reprobuild.ops.families import float_compute_type


def _per_dim(node: Node, key: str, nd: int, default: int) -> tuple[int, ...]:
    values = ints(node.attr(key)) if node.has_attr(key) else (default,) * nd
    if len(values) != nd:
        raise OpError(f"{key} {list(values)} should have {nd} values, one per spatial dimension")
    return values


class ConvTranspose(OpDef):
    op, versions = "ConvTranspose", (1, 11, 22)
    version = 2
    num_inputs = (2, 3)
    dtypes = FLOATS
    same_type = (1, 2)

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

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        x, w = inputs[0].shape, inputs[1].shape
        group = int(attrs["group"])
        if len(x) < 3 or len(w) != len(x):
            raise OpError(f"needs input and weight of equal rank >= 3; got {list(x)} and {list(w)}")
        if group < 1 or x[1] != w[0] or x[1] % group:
            raise OpError(f"input has {x[1]} channels; weight {list(w)} needs {w[0]}, divisible by group={group}")
        m = w[1] * group
        if len(inputs) > 2 and inputs[2].shape != (m,):
            raise OpError(f"bias has shape {list(inputs[2].shape)}, expected [{m}]")
        out = tuple(self.out_size(attrs, d, x[2 + d], w[2 + d]) for d in range(len(x) - 2))
        if min(out) < 1:
            raise OpError(f"the output would be empty: spatial shape {list(out)}")
        return [TensorType((x[0], m, *out), inputs[0].dtype)]

    @staticmethod
    def out_size(attrs: Attrs, d: int, size: int, kernel: int) -> int:
        nd = len(attrs["strides"])
        return (attrs["strides"][d] * (size - 1) + attrs["output_padding"][d] + attrs["dilations"][d] * (kernel - 1)
                + 1 - attrs["pads"][d] - attrs["pads"][nd + d])

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x, w = inputs[0], inputs[1]
        dtype, work = x.dtype, float_compute_type(xp, x)
        n, c, spatial = x.shape[0], x.shape[1], tuple(x.shape[2:])
        group, mg, kernel = int(attrs["group"]), w.shape[1], tuple(w.shape[2:])
        taps, pixels = int(np.prod(kernel, dtype=np.int64)), int(np.prod(spatial, dtype=np.int64))
        xg = x.astype(work, copy=False).reshape(n, group, c // group, pixels)
        wg = w.astype(work, copy=False).reshape(group, c // group, mg * taps)
        cols = xp.matmul(xp.swapaxes(wg, 1, 2), xg)  # (N, group, mg * taps, pixels)
        cols = cols.reshape((n, group * mg, taps, *spatial))
        out = tuple(self.out_size(attrs, d, spatial[d], kernel[d]) for d in range(len(spatial)))
        nd = len(spatial)
        y = col2im(xp, cols, kernel, attrs["strides"], attrs["dilations"], attrs["pads"][:nd], out)
        if len(inputs) > 2:
            y = y + inputs[2].astype(work, copy=False).reshape((1, group * mg) + (1,) * nd)
        return [y.astype(dtype)]


class Col2Im(OpDef):
    """Canonical attributes: ``image_shape`` and ``block_shape`` (from the inputs), ``dilations``, ``pads``,
    ``strides``."""

    op, versions = "Col2Im", (18,)
    version = 2
    num_inputs = (3, 3)
    dtypes = NUMERIC

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

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        x = inputs[0].shape
        image, block, nd = attrs["image_shape"], attrs["block_shape"], len(attrs["image_shape"])
        taps = int(np.prod(block, dtype=np.int64))
        blocks = self.blocks(attrs)
        if len(x) != 3 or x[1] % taps or min(blocks) < 1 or x[2] != int(np.prod(blocks, dtype=np.int64)):
            raise OpError(f"input {list(x)} should be (N, C * {taps}, {' * '.join(map(str, blocks))}) for blocks "
                          f"{list(block)} over an image {list(image)} ({nd}-D) with pads {list(attrs['pads'])}, "
                          f"strides {list(attrs['strides'])}, dilations {list(attrs['dilations'])}")
        return [TensorType((x[0], x[1] // taps, *image), inputs[0].dtype)]

    @staticmethod
    def blocks(attrs: Attrs) -> tuple[int, ...]:
        image, block, nd = attrs["image_shape"], attrs["block_shape"], len(attrs["image_shape"])
        return tuple(blocks_along(image[d], block[d], attrs["strides"][d], attrs["dilations"][d], attrs["pads"][d],
                                  attrs["pads"][nd + d]) for d in range(nd))

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x = inputs[0]
        dtype, work = x.dtype, float_compute_type(xp, x)
        block, nd = tuple(attrs["block_shape"]), len(attrs["block_shape"])
        taps = int(np.prod(block, dtype=np.int64))
        cols = x.astype(work, copy=False).reshape((x.shape[0], x.shape[1] // taps, taps, *self.blocks(attrs)))
        y = col2im(xp, cols, block, attrs["strides"], attrs["dilations"], attrs["pads"][:nd], attrs["image_shape"])
        return [y.astype(dtype)]


class DeformConv(OpDef):
    """2-D only (the ONNX reference and onnxruntime implement no other rank). Canonical attributes: ``pads``,
    ``strides``, ``dilations``, ``group``, ``offset_group``, ``has_mask`` (whether the mask input is there)."""

    op, versions = "DeformConv", (19, 22)
    version = 2
    num_inputs = (3, 5)
    dtypes = FLOATS
    same_type = (1, 2, 3, 4)

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

    def infer(self, attrs: Attrs, inputs: Sequence[TensorType]) -> list[TensorType]:
        self.check_types(inputs)
        x, w, offset = inputs[0].shape, inputs[1].shape, inputs[2].shape
        group, og = int(attrs["group"]), int(attrs["offset_group"])
        if group < 1 or og < 1 or x[1] != w[1] * group or w[0] % group or x[1] % og:
            raise OpError(f"input {list(x)} and weight {list(w)} do not fit group={group} and offset_group={og}: "
                          "the input channels must be weight channels * group and divisible by offset_group")
        out = output_spatial(x[2:], w[2:], attrs)
        taps = w[2] * w[3]
        if offset != (x[0], og * taps * 2, *out):
            raise OpError(f"offset has shape {list(offset)}, expected {[x[0], og * taps * 2, *out]}")
        rest = inputs[3:]
        if attrs["has_mask"]:
            mask, rest = rest[-1], rest[:-1]
            if mask.shape != (x[0], og * taps, *out):
                raise OpError(f"mask has shape {list(mask.shape)}, expected {[x[0], og * taps, *out]}")
        if rest and rest[0].shape != (w[0],):
            raise OpError(f"bias has shape {list(rest[0].shape)}, expected [{w[0]}]")
        return [TensorType((x[0], w[0], *out), inputs[0].dtype)]

    def compute(self, xp: Any, attrs: Attrs, *inputs: Any) -> Sequence[Any]:
        x, w, offset = inputs[:3]
        rest = list(inputs[3:])
        mask = rest.pop() if attrs["has_mask"] else None
        bias = rest[0] if rest else None
        dtype, work = x.dtype, float_compute_type(xp, x)
        x, w, offset = (a.astype(work, copy=False) for a in (x, w, offset))
        mask = None if mask is None else mask.astype(work, copy=False)
        n, group, m, cg = x.shape[0], int(attrs["group"]), w.shape[0], w.shape[1]
        out = output_spatial(x.shape[2:], w.shape[2:], attrs)
        cols = deform_columns(xp, x, offset, mask, w.shape[2:], attrs["strides"], attrs["dilations"], attrs["pads"],
                              out, int(attrs["offset_group"]))
        taps, pixels = cols.shape[2], cols.shape[3]
        y = xp.matmul(w.reshape(group, m // group, cg * taps), cols.reshape(n, group, cg * taps, pixels))
        y = y.reshape((n, m, *out))
        if bias is not None:
            y = y + bias.astype(work, copy=False).reshape(1, m, 1, 1)
        return [y.astype(dtype)]


OPS = (Col2Im(), ConvTranspose(), DeformConv())

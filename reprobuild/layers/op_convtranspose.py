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
from reprobuild.layers._nn_col2im import blocks_along, col2im
from reprobuild.layers._nn_deform import deform_columns
from reprobuild.layers._window import output_spatial
from reprobuild.layers.base import Attrs, LayerDef, OpError, TensorType
from reprobuild.layers.families import float_compute_type


class ConvTranspose(LayerDef):
    op = "ConvTranspose"
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


class Col2Im(LayerDef):
    """Canonical attributes: ``image_shape`` and ``block_shape`` (from the inputs), ``dilations``, ``pads``,
    ``strides``."""

    op = "Col2Im"
    version = 2
    num_inputs = (3, 3)
    dtypes = NUMERIC

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


class DeformConv(LayerDef):
    """2-D only (the ONNX reference and onnxruntime implement no other rank). Canonical attributes: ``pads``,
    ``strides``, ``dilations``, ``group``, ``offset_group``, ``has_mask`` (whether the mask input is there)."""

    op = "DeformConv"
    version = 2
    num_inputs = (3, 5)
    dtypes = FLOATS
    same_type = (1, 2, 3, 4)

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


LAYERS = (Col2Im(), ConvTranspose(), DeformConv())

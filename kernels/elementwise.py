"""Elementwise tactics: Add, Mul, Sum (numpy broadcasting) and Relu, and the float32/float16 Cast. CUDA tactics
compile ``elementwise.cu``.

The CUDA broadcast kernel indexes each operand through strides (0 along a broadcast dimension). The strides are
simplified on the host first: size-1 output dimensions are dropped and neighbours that every operand walks
contiguously are merged, so (N, C, H, W) + (1, C, 1, 1) becomes a rank-3 problem and same-shape inputs a flat one.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from reprobuild.kernels.backend import Backend
from reprobuild.kernels.cuda_launch import i32, i64, linear, operand_refs, plan
from reprobuild.kernels.launch import KernelLaunch, Out
from reprobuild.kernels.tactic import Kernel, LayerSpec, Tactic, positional

BINARY_OPS = ("Add", "Mul", "Sum")


class CpuElementwise(Tactic):
    family, ops, name, backend, priority = "elementwise", ("Add", "Mul", "Relu", "Sum"), "cpu_numpy", "cpu", 10
    dtypes = ("float32", "int64")
    needs_activation = False

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        consts = dict(layer.constants)
        op = layer.op

        def run(inputs: Sequence[Any], outputs: Sequence[Any], workspace: Any) -> None:
            args, out = positional(layer, consts, inputs), outputs[0]
            if op == "Relu":
                np.maximum(args[0], out.dtype.type(0), out=out)
            elif op == "Mul":
                np.multiply(args[0], args[1], out=out)
            else:  # Add, and Sum folded left to right
                np.add(args[0], args[1], out=out) if len(args) > 1 else np.copyto(out, args[0])
                for extra in args[2:]:
                    np.add(out, extra, out=out)

        return run


#: The most dimensions the broadcast kernel indexes (after merging); MAX_RANK in elementwise.cu.
MAX_RANK = 6
OP_ADD, OP_MUL, OP_COPY = 0, 1, 2


def broadcast_strides(out_shape: tuple[int, ...], operands: Sequence[tuple[int, ...]]
                      ) -> tuple[tuple[int, ...], list[tuple[int, ...]]]:
    """The output shape and each contiguous operand's element strides (0 where it broadcasts), simplified:
    size-1 output dimensions dropped, and a dimension merged into the next where every operand allows it."""
    rank = len(out_shape)
    all_strides = []
    for operand in operands:
        padded = (1,) * (rank - len(operand)) + tuple(operand)
        dense = [int(np.prod(padded[d + 1:], dtype=np.int64)) for d in range(rank)]
        all_strides.append([0 if padded[d] == 1 else dense[d] for d in range(rank)])
    keep = [d for d in range(rank) if out_shape[d] != 1]
    shape: list[int] = []
    strides: list[list[int]] = [[] for _ in operands]
    for d in keep:
        if shape and all(st[d] * out_shape[d] == merged[-1] for st, merged in zip(all_strides, strides)):
            shape[-1] *= out_shape[d]
            for st, merged in zip(all_strides, strides):
                merged[-1] = st[d]
        else:
            shape.append(out_shape[d])
            for st, merged in zip(all_strides, strides):
                merged.append(st[d])
    return tuple(shape), [tuple(st) for st in strides]


def binary_launch(backend: Backend, op: int, out_shape: tuple[int, ...], a_shape: tuple[int, ...],
                  b_shape: tuple[int, ...], a: Any, b: Any, out: Any) -> KernelLaunch:
    """out = a (op) b for one pair of operands, with the cheapest kernel their layouts allow."""
    total = int(np.prod(out_shape, dtype=np.int64))
    shape, (sa, sb) = broadcast_strides(out_shape, [a_shape, b_shape])
    dense = tuple(int(np.prod(shape[d + 1:], dtype=np.int64)) for d in range(len(shape)))
    if sa == dense and sb == dense:
        return linear(backend, "elementwise.cu", "binary_same", total, (a, b, out, i32(op), i64(total)))
    if len(shape) > MAX_RANK:
        raise ValueError(f"broadcast of rank {len(shape)} exceeds {MAX_RANK}")
    meta = np.zeros(3 * MAX_RANK, dtype=np.int64)
    for i, values in enumerate((shape, sa, sb)):
        meta[i * MAX_RANK:i * MAX_RANK + len(values)] = values
    return linear(backend, "elementwise.cu", "binary_broadcast", total,
                  (a, b, out, backend.asarray(meta), i32(op), i32(len(shape)), i64(total)))


def _steps(layer: LayerSpec) -> list[tuple[int, tuple[int, ...], tuple[int, ...]]]:
    """(op, a shape, b shape) of each binary kernel a non-Relu layer runs: Sum is folded left to right into out."""
    out_shape, shapes = layer.outputs[0].shape, [sig.shape for sig in layer.inputs]
    if len(shapes) == 1:  # Sum of one input: a copy
        return [(OP_COPY, shapes[0], shapes[0])]
    first = (OP_MUL if layer.op == "Mul" else OP_ADD, shapes[0], shapes[1])
    return [first, *((OP_ADD, out_shape, s) for s in shapes[2:])]


class CudaBroadcast(Tactic):
    """Add, Mul and Sum with numpy broadcasting (Sum folded left to right, as on the CPU), and Relu."""

    family, ops, name, backend, priority = "elementwise", ("Add", "Mul", "Relu", "Sum"), "cuda_broadcast", "cuda", 10
    capturable = True
    source = "nvrtc"
    cuda_kernels = MappingProxyType({"elementwise.cu": ("binary_broadcast", "binary_same", "relu")})

    def unsupported(self, layer: LayerSpec) -> str | None:
        if layer.op == "Relu":
            return None
        out_shape = layer.outputs[0].shape
        rank = max(len(broadcast_strides(out_shape, [a, b])[0]) for _, a, b in _steps(layer))
        if rank > MAX_RANK:
            return (f"broadcasting {[list(s.shape) for s in layer.inputs]} needs {rank} dimensions after merging "
                    f"the contiguous ones; the kernel indexes at most {MAX_RANK}")
        return None

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        consts = {i: backend.asarray(v.astype(np.float32, copy=False)) for i, v in layer.constants.items()}
        out_shape = layer.outputs[0].shape
        total = int(np.prod(out_shape, dtype=np.int64))
        args = operand_refs(layer, consts)
        if layer.op == "Relu":
            return plan(backend, linear(backend, "elementwise.cu", "relu", total, (args[0], Out(0), i64(total))))
        steps = _steps(layer)
        if len(args) == 1:
            launches = [binary_launch(backend, OP_COPY, out_shape, *steps[0][1:], args[0], args[0], Out(0))]
        else:
            launches = [binary_launch(backend, steps[0][0], out_shape, *steps[0][1:], args[0], args[1], Out(0))]
            launches += [binary_launch(backend, op, out_shape, a, b, Out(0), extra, Out(0))
                         for (op, a, b), extra in zip(steps[1:], args[2:])]
        metas = tuple(x.args[3] for x in launches if x.kernel.endswith("binary_broadcast"))
        return plan(backend, *launches, holds=(*consts.values(), *metas))


#: The narrow float types the CUDA cast tactic converts float32 to and from.
CAST_NARROW = ("float16", "bfloat16")


class CudaCast(Tactic):
    """Cast between float32 and float16 or bfloat16, one element a thread (the casts ``--precision fp16`` and
    ``bf16`` insert). Version 2: one pair of kernels on ``dtype.cuh``'s ``elem_t``, built per narrow type."""

    family, ops, name, backend, priority = "elementwise", ("Cast",), "cuda_cast_float", "cuda", 10
    version = 2
    dtypes = ("float32", *CAST_NARROW)
    per_dtype_build = True
    capturable = True
    source = "nvrtc"
    cuda_kernels = MappingProxyType({"elementwise.cu": ("cast_from_float", "cast_to_float")})

    def unsupported(self, layer: LayerSpec) -> str | None:
        pair = (layer.inputs[0].dtype, layer.outputs[0].dtype)
        if "float32" not in pair or not set(pair) & set(CAST_NARROW):
            return f"casts {pair[0]} to {pair[1]}; this tactic casts float32 to {' or '.join(CAST_NARROW)} and back"
        return None

    def kernel_dtype(self, layer: LayerSpec) -> str:
        """The narrow side of the cast: elementwise.cu is built for it."""
        source, target = layer.inputs[0].dtype, layer.outputs[0].dtype
        return target if source == "float32" else source

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        kernel = "cast_from_float" if layer.inputs[0].dtype == "float32" else "cast_to_float"
        total = layer.outputs[0].size
        return plan(backend, linear(backend, "elementwise.cu", kernel, total,
                                    (*operand_refs(layer, {}), Out(0), i64(total)), dtype=self.kernel_dtype(layer)))


TACTICS: tuple[Tactic, ...] = (CpuElementwise(), CudaBroadcast(), CudaCast())

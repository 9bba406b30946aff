"""Fused elementwise tactic: a FusedElementwise program, or one plain elementwise layer (a one-step program), as one
generated CUDA kernel that reads each input once and writes the output once.

The kernel is CUDA C text made from the layer alone (its program, its shapes, its dtype): one ``extern "C"``
grid-stride loop over the output, each input read through broadcast strides that are simplified on the host
(``broadcast_strides``) and written into the source as constants, so the source, and therefore the cubin, is a
pure function of the layer. Each step computes in float its op's formula from the table in
``reprobuild/layers/formulas.py``, written as C by ``formulas.py`` (correctly rounded operations, which the compiler
never contracts into an FMA; the formula the op's reference computes through), and float16 and bfloat16 results are
rounded after every step, as the unfused layers store them; so the fused kernel computes what the unfused layers
compute, up to the last bits of the GPU's
``expf``/``tanhf``/``erff``/``powf``. NaN propagates through Relu, Max, Min and Clip as in NumPy. Narrow values
are converted by ``dtype.cuh`` on 16-bit storage: float16 by inline PTX (``cvt.f32.f16``, ``cvt.rn.f16.f32``),
bfloat16 by integer arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

import numpy as np

from reprobuild.core.digest import sha256_hex
from reprobuild.core.errors import BuildError
from reprobuild.kernels.backend import Backend, CudaBackend
from reprobuild.kernels.cuda_launch import BLOCK, MAX_BLOCKS, linear_grid, operand_refs, plan
from reprobuild.kernels.elementwise import broadcast_strides
from reprobuild.kernels.formulas import c_expression, helper_definitions
from reprobuild.kernels.launch import KernelLaunch, Out
from reprobuild.kernels.nvrtc import load_source, package_headers
from reprobuild.kernels.tactic import Kernel, LayerSpec, Tactic
from reprobuild.layers.base import OpError
from reprobuild.layers.op_fused_elementwise import STEP_OPS, Step, encode_step, parse_program

KERNEL_NAME = "fused_elementwise"
#: The most inputs one generated kernel takes (each is a pointer parameter; CUDA allows 4 KiB of them).
MAX_INPUTS = 128
#: The C storage type of each dtype the kernel runs.
STORAGE = MappingProxyType({"float32": "float", "float16": "unsigned short", "bfloat16": "bf16_t"})
#: The rounding after every step of a narrow dtype (as the unfused layers store each result).
ROUNDING = MappingProxyType({"float16": "round_half", "bfloat16": "round_bf16"})

#: What every generated kernel starts with: dtype.cuh's conversions, the rounding and storing of each dtype, and
#: the formula table's helpers (NumPy's NaN-propagating max/min/clip, relu, sigmoid).
PRELUDE = r"""#include "dtype.cuh"
__device__ __forceinline__ float round_half(float f) { return ld(to_half(f)); }
__device__ __forceinline__ float round_bf16(float f) { return ld(to_bf16(f)); }
__device__ __forceinline__ void st(float* p, float v) { *p = v; }
__device__ __forceinline__ void st(unsigned short* p, float v) { *p = to_half(v); }
__device__ __forceinline__ void st(bf16_t* p, float v) { *p = to_bf16(v); }
""" + helper_definitions()


def step_expression(step: Step, args: Sequence[str]) -> str:
    """The C expression of one step on float operands ``args``: its op's formula in the table (``formulas``)."""
    return c_expression(step.op, args, step.attributes)


def layer_program(layer: LayerSpec) -> tuple[Step, ...]:
    """The layer's program: a FusedElementwise's steps, or a plain elementwise layer as one step (checked the same
    way); an OpError when the layer is no such program."""
    if layer.op == "FusedElementwise":
        return parse_program(layer.attr("steps"), len(layer.inputs))
    step = Step(layer.op, tuple(("in", i) for i in range(len(layer.inputs))), tuple(sorted(layer.attrs.items())))
    return parse_program((encode_step(step),), len(layer.inputs))


def index_code(out_shape: tuple[int, ...], shapes: Sequence[tuple[int, ...]],
                index: str) -> tuple[list[str], list[str]]:
    """Lines computing the output position ``i``'s coordinates that some input needs, and each input's element
    offset: ``i`` for an input of the output's layout, ``0`` for a single value, else its strides' sum."""
    shape, strides = broadcast_strides(out_shape, shapes)
    dense = tuple(int(np.prod(shape[d + 1:], dtype=np.int64)) for d in range(len(shape)))
    offsets: list[str] = []
    used: set[int] = set()
    for st in strides:
        if st == dense:
            offsets.append("i")
        elif not any(st):
            offsets.append("0")
        else:
            offsets.append(" + ".join(f"q{d}" if s == 1 else f"q{d} * {s}" for d, s in enumerate(st) if s))
            used.update(d for d, s in enumerate(st) if s)
    lines: list[str] = []
    if used:
        lines.append(f"{index} t = i;")
        for d in range(len(shape) - 1, min(used) - 1, -1):
            if d == 0:
                lines.append(f"const {index} q0 = t;")
            elif d in used:
                lines.append(f"const {index} q{d} = t % {shape[d]}; t /= {shape[d]};")
            else:
                lines.append(f"t /= {shape[d]};")
    return lines, offsets


def generate_source(program: Sequence[Step], dtype: str, out_shape: tuple[int, ...],
                    shapes: Sequence[tuple[int, ...]]) -> str:
    """The CUDA C text of the kernel computing ``program`` on inputs of ``shapes`` into a contiguous output of
    ``out_shape``, all of ``dtype`` (float32, float16 or bfloat16). Deterministic: a pure function of its arguments."""
    if dtype not in STORAGE:
        raise BuildError(f"the fused elementwise kernel stores {', '.join(STORAGE)}, not {dtype}")
    storage = STORAGE[dtype]
    total = int(np.prod(out_shape, dtype=np.int64))
    # a 32-bit index wherever the grid-stride loop cannot overflow it
    index = "unsigned int" if total + BLOCK * MAX_BLOCKS < 2**32 else "unsigned long long"
    index_lines, offsets = index_code(out_shape, shapes, index)
    params = [f"const {storage}* in{k}" for k in range(len(shapes))] + [f"{storage}* out"]
    body = [*index_lines, *(f"const float a{k} = ld(in{k}[{off}]);" for k, off in enumerate(offsets))]
    for k, step in enumerate(program):
        args = [f"a{i}" if kind == "in" else f"s{i}" for kind, i in step.operands]
        expression = step_expression(step, args)
        rounded = f"{ROUNDING[dtype]}({expression})" if dtype in ROUNDING else expression
        body.append(f"const float s{k} = {rounded};"
                    f"  // {encode_step(step)}")
    body.append(f"st(out + i, s{len(program) - 1});")
    header = [f"// Generated by reprobuild.kernels.fused_elementwise: {len(program)} step(s) on {dtype}, output "
              f"{list(out_shape)}, inputs {[list(s) for s in shapes]}."]
    loop = [f"extern \"C\" __global__ void {KERNEL_NAME}({', '.join(params)})", "{",
            f"    const {index} total = {total}{'u' if index == 'unsigned int' else 'ull'};",
            f"    const {index} step = ({index})gridDim.x * blockDim.x;",
            f"    for ({index} i = ({index})blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {{",
            *(f"        {line}" for line in body), "    }", "}"]
    return "\n".join([*header, PRELUDE, *loop]) + "\n"


class CudaFusedElementwise(Tactic):
    """A FusedElementwise layer, or one elementwise layer, as one generated grid-stride kernel. Version 2: the
    formulas come from the table in ``formulas.py`` (the same math; its helpers and ternaries are written anew).
    Version 3: ``prepare`` imports nvrtc's loaders at module level (issue 21); the same kernels. Version 4: the table
    lives in ``reprobuild/layers/formulas.py``, which the references compute through (issue 21); the same C."""

    family, name, backend, source = "elementwise_fused", "cuda_generated", "cuda", "nvrtc"
    version = 4
    ops = ("FusedElementwise", *STEP_OPS)
    dtypes = ("float32", "float16", "bfloat16")
    capturable = True
    needs_activation = False
    generated_cuda = PRELUDE  # every generated kernel starts with it (and includes dtype.cuh through it)

    def unsupported(self, layer: LayerSpec) -> str | None:
        dtype = layer.outputs[0].dtype
        if any(sig.dtype != dtype for sig in layer.inputs):
            return f"inputs of dtypes {[sig.dtype for sig in layer.inputs]} and an output of {dtype}; the kernel " \
                   "computes in one dtype"
        if len(layer.inputs) > MAX_INPUTS:
            return f"{len(layer.inputs)} inputs; the kernel takes at most {MAX_INPUTS}"
        try:
            layer_program(layer)
        except OpError as exc:
            return f"not an elementwise program the kernel runs: {exc}"
        return None

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        if not isinstance(backend, CudaBackend):
            raise TypeError(f"{self.label} needs the cuda backend, not {backend.name}")
        out = layer.outputs[0]
        source = generate_source(layer_program(layer), out.dtype, out.shape, [sig.shape for sig in layer.inputs])
        digest = sha256_hex(source.encode())[:16]
        with backend.device:
            function = load_source(f"{KERNEL_NAME}_{digest}.cu", source, backend.compute_capability,
                                   backend.device_id, headers=package_headers()).function(KERNEL_NAME)
        consts = {i: backend.asarray(value) for i, value in sorted(layer.constants.items())}
        launch = KernelLaunch(function, f"generated:{KERNEL_NAME}_{digest}", linear_grid(out.size), (BLOCK, 1, 1),
                              (*operand_refs(layer, consts), Out(0)))
        return plan(backend, launch, holds=tuple(consts.values()))


TACTICS: tuple[Tactic, ...] = (CudaFusedElementwise(),)

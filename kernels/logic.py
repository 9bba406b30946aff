"""Logic tactics: comparisons (Equal, Greater, GreaterOrEqual, Less, LessOrEqual), bool logic (And, Or, Xor, Not),
IsNaN and IsInf, Where, Trilu, the Casts between bool, int32, int64 and the float types, and int32/int64
arithmetic (Add, Sub, Mul, Div, Max, Min: position ids, mask arithmetic), as one generated CUDA kernel per layer,
with numpy broadcasting and bool inputs and outputs.

The kernel is CUDA C text made from the layer alone (its op, attributes, shapes and dtypes), like the fused
elementwise one (``fused_elementwise.py``, whose broadcast indexing it shares): one ``extern "C"`` grid-stride loop
over the output. Nothing is rounded: a comparison is exact in the inputs' own type (float16 and bfloat16 widen
exactly to float; integers compare as integers, never through float), a NaN compares unequal to everything as in
NumPy, Where and Trilu copy the chosen element's bits, and a Cast rounds once, to nearest even, as NumPy's and
ml_dtypes' ``astype`` do (an integer reaches float16 through float32, exact below 2**24 where float16 has long
overflowed; bfloat16 through double and float32 rounded to odd, which rounds to nearest even once); so every
output equals the reference's bit for bit (but for the payload of a NaN cast to float16, which the GPU makes
canonical). Integer Add, Sub and Mul wrap (computed unsigned, where C++ defines
the wrap), and Div truncates toward zero with a zero divisor giving 0, step for step as ``op_arith`` computes
it. bool is stored one byte an element, 0 or 1 (what CuPy and NumPy hold); a nonzero byte reads as true.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

from reprobuild.core.digest import sha256_hex
from reprobuild.core.errors import BuildError
from reprobuild.kernels.backend import Backend, CudaBackend
from reprobuild.kernels.cuda_launch import BLOCK, MAX_BLOCKS, linear_grid, operand_refs, plan
from reprobuild.kernels.fused_elementwise import index_code
from reprobuild.kernels.launch import KernelLaunch, Out
from reprobuild.kernels.nvrtc import load_source, package_headers
from reprobuild.kernels.tactic import Kernel, LayerSpec, Tactic

KERNEL_NAME = "logic_elementwise"
#: The C storage type of each dtype the kernel reads or writes.
STORAGE = MappingProxyType({
    "bool": "unsigned char", "int8": "signed char", "uint8": "unsigned char", "int16": "short",
    "uint16": "unsigned short", "int32": "int", "uint32": "unsigned int", "int64": "long long",
    "uint64": "unsigned long long", "float16": "unsigned short", "bfloat16": "bf16_t", "float32": "float",
    "float64": "double"})
FLOAT_TYPES = ("bfloat16", "float16", "float32", "float64")
#: The C operator of each comparison and binary logic op (on values, bools read as 0 or 1).
BINARY = MappingProxyType({"And": "&&", "Equal": "==", "Greater": ">", "GreaterOrEqual": ">=", "Less": "<",
                           "LessOrEqual": "<=", "Or": "||", "Xor": "!="})
#: The integer arithmetic ops, and the unsigned type each integer dtype wraps through.
ARITHMETIC = ("Add", "Div", "Max", "Min", "Mul", "Sub")
WRAP = MappingProxyType({"int32": "unsigned int", "int64": "unsigned long long"})
#: The dtypes the Cast of this tactic converts between (the others are refused with a reason).
CAST_TYPES = ("bool", "int32", "int64", "float16", "bfloat16", "float32")

#: What every generated kernel starts with: dtype.cuh's conversions, the infinity, and ONNX's float-to-integer
#: conversion (``op_cast.float_to_int``: truncate toward zero; NaN, infinities and values outside the 64-bit range
#: give 0; the narrower targets wrap).
PRELUDE = r"""#include "dtype.cuh"
__device__ __forceinline__ float inf_f() { return __int_as_float(0x7f800000); }
__device__ __forceinline__ long long float_to_int(double v)
{
    const double t = trunc(v);
    return (t >= -9223372036854775808.0 && t < 9223372036854775808.0) ? (long long)t : 0;
}
// d as float rounded to odd (toward zero, the last bit set where that was inexact): rounding it on to bfloat16
// (8 significant bits of float's 24) is then the single rounding of d to nearest even.
__device__ __forceinline__ float float_odd(double d)
{
    const float f = __double2float_rz(d);
    return (double)f == d ? f : __uint_as_float(__float_as_uint(f) | 1u);
}
// Integer a / b as op_arith.truncating_divide computes it: |a| // |b| (NumPy's floor division, on magnitudes that
// wrap for the most negative value), negated where the signs differ; a zero divisor gives 0.
template <typename T, typename U>
__device__ __forceinline__ T int_div(T a, T b)
{
    if (b == 0) return 0;
    const T aa = a < 0 ? (T)((U)0 - (U)a) : a, bb = b < 0 ? (T)((U)0 - (U)b) : b;
    T q = aa / bb;
    if (aa % bb != 0 && (aa < 0) != (bb < 0)) q -= 1;
    return (a < 0) != (b < 0) ? (T)((U)0 - (U)q) : q;
}
"""


def load(dtype: str, ref: str) -> str:
    """The C value of the element ``ref`` of ``dtype``: float16 and bfloat16 widened to float (exactly), bool as
    0 or 1, the others as stored."""
    if dtype in ("float16", "bfloat16"):
        return f"ld({ref})"
    return f"({ref} != 0)" if dtype == "bool" else ref


def store(dtype: str, value: str, source: str) -> str:
    """The C expression storing ``value`` (of a ``source``-typed computation) as ``dtype``: bools as 0 or 1, narrow
    floats rounded to nearest even, floats to integers as ONNX's Cast defines it."""
    if dtype == "bool":
        return f"(unsigned char)(({value}) != 0)"
    if dtype == "float16":
        return f"to_half((float)({value}))"
    if dtype == "bfloat16":
        return f"to_bf16((float)({value}))" if source in FLOAT_TYPES else f"to_bf16(float_odd((double)({value})))"
    if source in FLOAT_TYPES and dtype not in FLOAT_TYPES:
        return f"({STORAGE[dtype]})float_to_int({value})"
    return f"({STORAGE[dtype]})({value})"


def cast_problem(source: str, target: str) -> str | None:
    """Why this kernel cannot cast ``source`` to ``target`` exactly as the reference does; None when it can."""
    if source not in CAST_TYPES or target not in CAST_TYPES:
        return f"casts {source} to {target}; this tactic casts between {', '.join(CAST_TYPES)}"
    return None


def expression(layer: LayerSpec, args: Sequence[str]) -> str:
    """The C value of the layer's op on the loaded operands ``args``."""
    op = layer.op
    if op in ARITHMETIC:
        dtype = layer.inputs[0].dtype
        t, u = STORAGE[dtype], WRAP[dtype]
        if op == "Div":
            return f"int_div<{t}, {u}>({args[0]}, {args[1]})"
        if op in ("Max", "Min"):
            return f"({args[0]} {'>' if op == 'Max' else '<'} {args[1]} ? {args[0]} : {args[1]})"
        symbol = {"Add": "+", "Sub": "-", "Mul": "*"}[op]
        return f"({t})(({u}){args[0]} {symbol} ({u}){args[1]})"
    if op in BINARY:
        return f"({args[0]} {BINARY[op]} {args[1]})"
    if op == "Not":
        return f"(!{args[0]})"
    if op == "IsNaN":
        return f"({args[0]} != {args[0]})"
    if op == "IsInf":
        tests = [test for flag, test in (("detect_positive", f"{args[0]} == inf_f()"),
                                         ("detect_negative", f"{args[0]} == -inf_f()"))
                 if int(layer.attr(flag, 1))]
        return f"({' || '.join(tests)})" if tests else "false"
    if op == "Cast":
        return args[0]
    raise BuildError(f"the logic kernel does not run {op}")


def generate_source(layer: LayerSpec) -> str:
    """The CUDA C text of the kernel running ``layer`` (one of this module's ops) into a contiguous output:
    a pure function of the layer's op, attributes, shapes and dtypes."""
    out, shapes = layer.outputs[0], [sig.shape for sig in layer.inputs]
    dtypes = [sig.dtype for sig in layer.inputs]
    index = "unsigned int" if out.size + BLOCK * MAX_BLOCKS < 2**32 else "unsigned long long"
    index_lines, offsets = index_code(out.shape, shapes, index)
    params = [f"const {STORAGE[d]}* in{k}" for k, d in enumerate(dtypes)]
    params.append(f"{STORAGE[out.dtype]}* out")
    if layer.op == "Where":  # the chosen element's bits, whatever the dtype
        body = [f"out[i] = in0[{offsets[0]}] ? in1[{offsets[1]}] : in2[{offsets[2]}];"]
    elif layer.op == "Trilu":  # keep the element where column - row is on the kept side of diagonal k
        rows, cols = out.shape[-2:]
        side = ">=" if int(layer.attr("upper")) else "<="
        body = [f"const long long col = (long long)(i % {cols}u), row = (long long)((i / {cols}u) % {rows}u);",
                f"const {STORAGE[out.dtype]} zero{{}};",
                f"out[i] = col - row {side} {int(layer.attr('k'))}LL ? in0[i] : zero;"]
    else:
        loads = [f"const auto a{k} = {load(d, f'in{k}[{off}]')};" for k, (d, off) in enumerate(zip(dtypes, offsets))]
        value = expression(layer, [f"a{k}" for k in range(len(dtypes))])
        body = [*loads, f"out[i] = {store(out.dtype, value, dtypes[0])};"]
    attrs = ", ".join(f"{k}={v}" for k, v in sorted(layer.attrs.items()))
    header = [f"// Generated by reprobuild.kernels.logic: {layer.op}({attrs}) on {dtypes} to {out.dtype}, output "
              f"{list(out.shape)}, inputs {[list(s) for s in shapes]}."]
    loop = [f"extern \"C\" __global__ void {KERNEL_NAME}({', '.join(params)})", "{",
            f"    const {index} total = {out.size}{'u' if index == 'unsigned int' else 'ull'};",
            f"    const {index} step = ({index})gridDim.x * blockDim.x;",
            f"    for ({index} i = ({index})blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {{",
            *(f"        {line}" for line in (*index_lines, *body)), "    }", "}"]
    return "\n".join([*header, PRELUDE, *loop]) + "\n"


class CudaLogic(Tactic):
    """Comparisons, bool logic, IsNaN/IsInf, Where, Trilu, Cast and integer arithmetic as one generated grid-stride
    kernel per layer, with broadcasting; exact (see the module docstring)."""

    family, name, backend, source = "logic", "cuda_logic_generated", "cuda", "nvrtc"
    ops = ("Add", "And", "Cast", "Div", "Equal", "Greater", "GreaterOrEqual", "IsInf", "IsNaN", "Less",
           "LessOrEqual", "Max", "Min", "Mul", "Not", "Or", "Sub", "Trilu", "Where", "Xor")
    dtypes = tuple(STORAGE)
    capturable = True
    needs_activation = False
    priority = 20  # after the hand-written float cast (cuda_cast_float) where both run a layer
    generated_cuda = PRELUDE

    def unsupported(self, layer: LayerSpec) -> str | None:
        if layer.op == "Cast":
            return cast_problem(layer.inputs[0].dtype, layer.outputs[0].dtype)
        if layer.op in ARITHMETIC:
            if layer.inputs[0].dtype not in WRAP:
                return (f"{layer.inputs[0].dtype} arithmetic; this tactic runs int32 and int64 (float arithmetic is "
                        "the fused elementwise tactic's)")
            if len(layer.inputs) != 2:
                return f"{len(layer.inputs)} inputs; the kernel takes two"
        return None

    def prepare(self, layer: LayerSpec, backend: Backend) -> Kernel:
        if not isinstance(backend, CudaBackend):
            raise TypeError(f"{self.label} needs the cuda backend, not {backend.name}")
        out = layer.outputs[0]
        consts = {i: backend.asarray(value) for i, value in sorted(layer.constants.items())}
        if out.size == 0:
            return plan(backend, holds=tuple(consts.values()))
        source = generate_source(layer)
        digest = sha256_hex(source.encode())[:16]
        with backend.device:
            function = load_source(f"{KERNEL_NAME}_{digest}.cu", source, backend.compute_capability,
                                   backend.device_id, headers=package_headers()).function(KERNEL_NAME)
        launch = KernelLaunch(function, f"generated:{KERNEL_NAME}_{digest}", linear_grid(out.size), (BLOCK, 1, 1),
                              (*operand_refs(layer, consts), Out(0)))
        return plan(backend, launch, holds=tuple(consts.values()))


TACTICS: tuple[Tactic, ...] = (CudaLogic(),)

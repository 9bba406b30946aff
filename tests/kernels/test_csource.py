"""A CUDA kernel's source closure: the top-level code its symbol reaches, across the file and its headers, with
comments and layout normalized away, so it changes exactly when what the kernel compiles from changes."""

from __future__ import annotations

import pytest

from reprobuild.core.errors import BuildError
from reprobuild.kernels.csource import closure, translation_unit
from reprobuild.kernels.ctokens import Directive, tokenize

HEADER = """// helpers shared by the kernels
#pragma once
__device__ __forceinline__ float twice(float x) { return 2.f * x; }
__device__ __forceinline__ float unused(float x) { return x - 1.f; }
#if defined(WIDE)
typedef double acc_t;
#else
typedef float acc_t;
#endif
"""

SOURCE = """#include "helpers.cuh"

#define SCALE 3
#define LDS (SCALE + 1)   // an object-like macro whose body starts with a parenthesis
#define AXPY(a, x) ((a) * (x) + SCALE)

// The first kernel: twice, then scaled.
extern "C" __global__ void __launch_bounds__(128) first(float* out, const float* in)
{
    acc_t v = twice(in[threadIdx.x]);
#pragma unroll
    for (int i = 0; i < 2; ++i) v += AXPY(v, 1.f);
    out[threadIdx.x] = v;
}

template <int N>
__device__ __forceinline__ float power(float x) { float r = 1.f; for (int i = 0; i < N; ++i) r *= x; return r; }

#define POWER_KERNEL(N) \\
    extern "C" __global__ void power_##N(float* out) { out[threadIdx.x] = power<N>(out[threadIdx.x]) + LDS; }

POWER_KERNEL(2)
POWER_KERNEL(3)
"""


def _closure(symbol: str, source: str = SOURCE, header: str = HEADER) -> list[str]:
    files = {"helpers.cuh": header}
    return closure(translation_unit("k.cu", source, files.__getitem__, ["helpers.cuh"]), [symbol], "k.cu")


def test_comments_and_layout_are_not_tokens_and_directives_are_units() -> None:
    a = tokenize('int a = 1; // note "x"\n/* block\n comment */ int  b=2 ; const char* s = "// kept";\n')
    assert a == ["int", "a", "=", "1", ";", "int", "b", "=", "2", ";", "const", "char", "*", "s", "=", '"// kept"', ";"]
    define, = tokenize("#define F(x) \\\n  (x + 1)\n")
    assert isinstance(define, Directive) and define.function_like and define.text == "#define F( x ) ( x + 1 )"
    plain, = tokenize("#define F (x + 1)")
    assert isinstance(plain, Directive) and not plain.function_like and plain.text == "#define F ( x + 1 )"


def test_a_kernel_reaches_exactly_the_code_it_uses() -> None:
    text = "\n".join(_closure("first"))
    for reached in ("twice", "typedef double acc_t", "typedef float acc_t", "#define SCALE 3", "#define AXPY( a , x )",
                    "#pragma unroll"):
        assert reached in text, reached
    for unreached in ("unused", "power", "#define LDS", "note"):
        assert unreached not in text, unreached
    assert "[#if defined ( WIDE ) | #else] typedef float acc_t ;" in _closure("first")


def test_a_macro_invocation_defines_the_kernel_its_expansion_declares() -> None:
    text = "\n".join(_closure("power_3"))
    assert "POWER_KERNEL ( 3 )" in text and "POWER_KERNEL ( 2 )" not in text
    assert "template < int N >" in text and "#define LDS ( SCALE + 1 )" in text and "#define SCALE 3" in text


@pytest.mark.parametrize("edit, source, header", [
    ("a comment in the header", SOURCE, HEADER.replace("// helpers", "// the helpers, rewritten")),
    ("a comment and blank lines in the file", SOURCE.replace("// The first kernel", "\n\n// Kernel one"), HEADER),
    ("layout", SOURCE.replace("v += AXPY(v, 1.f);", "v   +=   AXPY( v,1.f );"), HEADER),
    ("a new kernel", SOURCE + 'extern "C" __global__ void added(float* out) { out[0] = twice(1.f); }\n', HEADER),
    ("a new block shape", SOURCE + "POWER_KERNEL(4)\n", HEADER),
    ("an unreached helper", SOURCE, HEADER.replace("x - 1.f", "x - 2.f")),
])
def test_edits_outside_a_kernels_closure_change_nothing(edit: str, source: str, header: str) -> None:
    for symbol in ("first", "power_2", "power_3"):
        assert _closure(symbol, source, header) == _closure(symbol), (edit, symbol)


@pytest.mark.parametrize("edit, source, header, changed", [
    ("a helper it calls", SOURCE, HEADER.replace("2.f * x", "2.f * x + 0.f"), {"first"}),
    ("a typedef branch it reaches", SOURCE, HEADER.replace("typedef double", "typedef long double"), {"first"}),
    ("a macro it expands", SOURCE.replace("#define SCALE 3", "#define SCALE 4"), HEADER,
     {"first", "power_2", "power_3"}),
    ("a template it instantiates", SOURCE.replace("r *= x;", "r = r * x;"), HEADER, {"power_2", "power_3"}),
    ("its own body", SOURCE.replace("out[threadIdx.x] = v;", "out[threadIdx.x] = -v;"), HEADER, {"first"}),
    ("the object-like macro becomes function-like", SOURCE.replace("#define LDS (SCALE", "#define LDS(SCALE"),
     HEADER, {"power_2", "power_3"}),
])
def test_edits_inside_a_kernels_closure_change_it(edit: str, source: str, header: str, changed: set[str]) -> None:
    for symbol in ("first", "power_2", "power_3"):
        assert (_closure(symbol, source, header) != _closure(symbol)) == (symbol in changed), (edit, symbol)


def test_a_symbol_the_file_does_not_define_is_refused() -> None:
    with pytest.raises(BuildError, match=r"k.cu defines no power_5; a tactic's cuda_kernels name the kernels"):
        _closure("power_5")
    with pytest.raises(BuildError, match=r"includes 'other.cuh'; the package kernels may include only"):
        translation_unit("k.cu", '#include "other.cuh"\n', {}.__getitem__, ["helpers.cuh"])


def test_declarations_name_what_they_declare() -> None:
    items = translation_unit("k.cu", """
__constant__ float table[4] = {1.f, 2.f, 3.f, 4.f};
static const int a = 1, b = 2;
struct __align__(16) pair { float x, y; } origin;
using word = unsigned int;
typedef unsigned short half_bits;
static_assert(sizeof(float) == 4, "float");
template <class T> __device__ T first(const T* p) { return p[0]; }
extern "C" { __global__ void in_block(float* out) { out[0] = table[0]; } }
""", {}.__getitem__, [])
    assert [sorted(i.defines) for i in items] == [["table"], ["a", "b"], ["origin", "pair"], ["word"], ["half_bits"],
                                                  [], ["first"], ["in_block"]]

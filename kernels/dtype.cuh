// Element storage for the kernels written once for float32, float16 and bfloat16 tensors (nvrtc.py compiles a
// file that includes this header once per dtype: -DREPRO_HALF=1 for float16, -DREPRO_BF16=1 for bfloat16).
// elem_t is how a tensor is stored; arithmetic is in float: ld() widens exactly, to_elem() rounds to nearest
// even, rnd() rounds a float to what storing it as an element and reading it back gives (nothing in float32),
// which is how a fused kernel rounds where the unfused layers would store. Half conversions are inline PTX and
// bfloat16 ones integer arithmetic, on 16-bit storage, so no CUDA header is needed; float16 is stored as
// unsigned short, bfloat16 as the one-member struct bf16_t (so that ld() of each is its own overload).
#pragma once

__device__ __forceinline__ float ld(float v) { return v; }
__device__ __forceinline__ float ld(unsigned short h)
{
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ unsigned short to_half(float f)
{
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

struct bf16_t { unsigned short bits; };
// bfloat16 is float32's upper half: widening is exact.
__device__ __forceinline__ float ld(bf16_t b) { return __uint_as_float(((unsigned int)b.bits) << 16); }
// Round to nearest even in integer arithmetic (the same bits on every architecture; cvt.rn.bf16.f32 needs sm_80);
// beyond the largest finite value to infinity; NaN becomes the quiet NaN of its sign, as ml_dtypes makes it.
__device__ __forceinline__ bf16_t to_bf16(float f)
{
    const unsigned int u = __float_as_uint(f);
    bf16_t b;
    b.bits = (u & 0x7fffffffu) > 0x7f800000u ? (unsigned short)(((u >> 16) & 0x8000u) | 0x7fc0u)
                                              : (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    return b;
}

#if defined(REPRO_HALF)
typedef unsigned short elem_t;
__device__ __forceinline__ elem_t to_elem(float f) { return to_half(f); }
#elif defined(REPRO_BF16)
typedef bf16_t elem_t;
__device__ __forceinline__ elem_t to_elem(float f) { return to_bf16(f); }
#else
typedef float elem_t;
__device__ __forceinline__ elem_t to_elem(float f) { return f; }
#endif
__device__ __forceinline__ float rnd(float f) { return ld(to_elem(f)); }

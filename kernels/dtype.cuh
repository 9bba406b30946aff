// Element storage for the kernels written once for float32 and float16 tensors (nvrtc.py compiles a file that
// includes this header a second time with -DREPRO_HALF=1). elem_t is how a tensor is stored; arithmetic is in
// float: ld() widens exactly, to_elem() rounds to nearest even, rnd() rounds a float to what storing it as an
// element and reading it back gives (nothing in float32), which is how a fused kernel rounds where the unfused
// layers would store. Half conversions are inline PTX on unsigned short storage, so no CUDA header is needed.
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

#ifdef REPRO_HALF
typedef unsigned short elem_t;
__device__ __forceinline__ elem_t to_elem(float f) { return to_half(f); }
__device__ __forceinline__ float rnd(float f) { return ld(to_half(f)); }
#else
typedef float elem_t;
__device__ __forceinline__ elem_t to_elem(float f) { return f; }
__device__ __forceinline__ float rnd(float f) { return f; }
#endif

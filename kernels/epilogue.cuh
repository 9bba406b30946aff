// The steps after a convolution's product that a fused convolution runs in its own kernel: + a residual, then an
// activation, each rounded on its own (to the element type too, in a half or bfloat16 build) as the unfused Add
// and activation layers round them, on dtype.cuh's elem_t, ld and rnd.
// act: 0 none, 1 Relu, 2 Clip(lo, hi), 3 Sigmoid, 4 SiLU (v * sigmoid(v)). NaN passes through Relu and Clip, as
// NumPy's maximum and clip pass it.
#pragma once
#include "dtype.cuh"

__device__ __forceinline__ float residual_activation(float v, const elem_t* residual, long long idx, int act,
                                                     float lo, float hi)
{
    if (residual) v = rnd(__fadd_rn(v, ld(residual[idx])));
    if (act == 1) {
        v = v != v ? v : (v > 0.f ? v : 0.f);
    } else if (act == 2) {
        v = v != v ? v : (v < lo ? lo : (v > hi ? hi : v));
    } else if (act == 3 || act == 4) {  // the reference's overflow-free form of 1 / (1 + e^-v)
        const float e = expf(-fabsf(v));
        const float s = v >= 0.f ? __fdiv_rn(1.f, __fadd_rn(1.f, e)) : __fdiv_rn(e, __fadd_rn(1.f, e));
        v = act == 3 ? s : __fmul_rn(v, rnd(s));
    }
    return v;
}

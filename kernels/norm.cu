// LayerNormalization for norm.py over the last `len` elements of each of `rows` contiguous rows. One block per
// row: the mean, then the mean of squared deviations (two passes, as the reference), each summed by reduce.cuh's
// fixed tree over THREADS partial sums, so every run adds in the same order.
// y = (x - mean) * inv_std * scale + bias.

// Written on dtype.cuh's elem_t (a float32 and a float16 build); statistics in float (stash_type 1), scale and
// bias given as float.
#include "dtype.cuh"
#include "reduce.cuh"

#define THREADS 256  // the block size (cuda_launch.BLOCK); a power of two for the tree

extern "C" __global__ void __launch_bounds__(THREADS) layernorm_rows(
    const elem_t* __restrict__ x, const float* __restrict__ scale, const float* __restrict__ bias,
    elem_t* __restrict__ out, long long rows, int len, float epsilon)
{
    __shared__ float partial[THREADS];
    const int tid = threadIdx.x;
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const elem_t* xr = x + r * len;
        elem_t* yr = out + r * len;
        float s = 0.f;
        for (int a = tid; a < len; a += THREADS) s = __fadd_rn(s, ld(xr[a]));
        const float mean = __fdiv_rn(block_sum<THREADS>(s, partial), (float)len);
        float q = 0.f;
        for (int a = tid; a < len; a += THREADS) {
            const float d = __fsub_rn(ld(xr[a]), mean);
            q = __fadd_rn(q, __fmul_rn(d, d));
        }
        const float var = __fdiv_rn(block_sum<THREADS>(q, partial), (float)len);
        const float inv_std = __fdiv_rn(1.f, sqrtf(__fadd_rn(var, epsilon)));
        for (int a = tid; a < len; a += THREADS) {
            float v = __fmul_rn(__fmul_rn(__fsub_rn(ld(xr[a]), mean), inv_std), scale[a]);
            if (bias) v = __fadd_rn(v, bias[a]);
            yr[a] = to_elem(v);
        }
    }
}

// RMSNormalization over the last `len` elements of each of `rows` contiguous rows, one block per row: the mean of
// squares summed by reduce.cuh's fixed tree (the same order as layernorm_rows' sums), then
// y = x / sqrt(mean_square + epsilon) * scale, the reference's formula, in float (stash_type 1). The scale has one
// value per normalized element: float (a constant, uploaded widened) or elem_t (a run-time input of x's type).
template <typename Scale>
__device__ __forceinline__ void rmsnorm_impl(
    const elem_t* __restrict__ x, const Scale* __restrict__ scale, elem_t* __restrict__ out, long long rows, int len,
    float epsilon)
{
    __shared__ float partial[THREADS];
    const int tid = threadIdx.x;
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const elem_t* xr = x + r * len;
        elem_t* yr = out + r * len;
        float q = 0.f;
        for (int a = tid; a < len; a += THREADS) {
            const float v = ld(xr[a]);
            q = __fadd_rn(q, __fmul_rn(v, v));
        }
        const float mean_square = __fdiv_rn(block_sum<THREADS>(q, partial), (float)len);
        const float rms = sqrtf(__fadd_rn(mean_square, epsilon));
        for (int a = tid; a < len; a += THREADS) yr[a] = to_elem(__fmul_rn(__fdiv_rn(ld(xr[a]), rms), ld(scale[a])));
    }
}

extern "C" __global__ void __launch_bounds__(THREADS) rmsnorm_rows(
    const elem_t* __restrict__ x, const float* __restrict__ scale, elem_t* __restrict__ out, long long rows, int len,
    float epsilon)
{
    rmsnorm_impl(x, scale, out, rows, len, epsilon);
}

extern "C" __global__ void __launch_bounds__(THREADS) rmsnorm_rows_input_scale(
    const elem_t* __restrict__ x, const elem_t* __restrict__ scale, elem_t* __restrict__ out, long long rows, int len,
    float epsilon)
{
    rmsnorm_impl(x, scale, out, rows, len, epsilon);
}

// Pooling kernels for pool.py. Every output is computed by a fixed sequence of operations: windows are walked in
// row-major order, and the global mean uses a fixed-shape tree; there are no atomics.

// Written on dtype.cuh's elem_t (a float32 and a float16 build); sums and means are computed in float.
#include "dtype.cuh"
#include "reduce.cuh"

#define THREADS 256  // block size of global_mean (cuda_launch.BLOCK); a power of two for the tree

// One thread per output (plane, oy, ox) of a 2-D window over a contiguous (planes, H, W) input. Positions
// outside the input (explicit pads, and the ceil_mode overhang) are skipped: they never win a max, and add
// nothing to a sum. An average divides by divisors[oy*ow + ox], the count computed on the host.
// total = planes * OH * OW.
extern "C" __global__ void pool_window(
    const elem_t* __restrict__ x, elem_t* __restrict__ out, const float* __restrict__ divisors,
    int h, int w, int oh, int ow, int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl,
    int is_max, long long total)
{
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
        long long t = idx;
        const int ox = (int)(t % ow); t /= ow;
        const int oy = (int)(t % oh); t /= oh;
        const elem_t* xp = x + t * h * w;
        const int y0 = oy * sh - pt;
        const int x0 = ox * sw - pl;
        // -inf is the max of an all-padding window, as the CPU tactic's -inf padding gives.
        float acc = is_max ? -__int_as_float(0x7f800000) : 0.f;
        for (int i = 0; i < kh; ++i) {
            const int iy = y0 + i * dh;
            if (iy < 0 || iy >= h) continue;
            for (int j = 0; j < kw; ++j) {
                const int ix = x0 + j * dw;
                if (ix < 0 || ix >= w) continue;
                const float v = ld(xp[(long long)iy * w + ix]);
                if (is_max) {
                    acc = (v > acc || v != v) ? v : acc;  // a NaN sticks, as np.max propagates it
                } else {
                    acc = __fadd_rn(acc, v);
                }
            }
        }
        out[idx] = to_elem(is_max ? acc : __fdiv_rn(acc, divisors[(long long)oy * ow + ox]));
    }
}

// out[p] = mean of the contiguous plane x[p*size .. (p+1)*size). One block of THREADS threads per plane: each
// thread sums a fixed strided slice in increasing order, then reduce.cuh's fixed tree adds the THREADS partial
// sums.
extern "C" __global__ void __launch_bounds__(THREADS) global_mean(
    const elem_t* __restrict__ x, elem_t* __restrict__ out, long long planes, long long size)
{
    __shared__ float partial[THREADS];
    const int tid = threadIdx.x;
    for (long long p = blockIdx.x; p < planes; p += gridDim.x) {
        const elem_t* xp = x + p * size;
        float s = 0.f;
        for (long long i = tid; i < size; i += THREADS) s = __fadd_rn(s, ld(xp[i]));
        s = block_sum<THREADS>(s, partial);
        if (tid == 0) out[p] = to_elem(__fdiv_rn(s, (float)size));
    }
}

// Softmax for softmax.py over the middle axis of a contiguous (outer, len, inner) view. One block per row
// (o, i): the max and the sum each go through reduce.cuh's fixed tree over THREADS partial results, so every run
// adds in the same order. expf (not __expf) keeps full single precision.

// Written on dtype.cuh's elem_t (a float32 and a float16 build); the max, the sum and the quotient in float.
#include "dtype.cuh"
#include "reduce.cuh"

#define THREADS 256  // the block size (cuda_launch.BLOCK); a power of two for the trees

// rows = outer * inner; element a of row r = (o, i) is x[(o*len + a)*inner + i].
extern "C" __global__ void __launch_bounds__(THREADS) softmax_rows(
    const elem_t* __restrict__ x, elem_t* __restrict__ out, long long rows, int len, long long inner)
{
    __shared__ float partial[THREADS];
    const int tid = threadIdx.x;
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const long long o = r / inner, i = r - o * inner;
        const long long base = o * len * inner + i;
        const elem_t* xr = x + base;
        elem_t* yr = out + base;

        // fmaxf skips NaN, but a NaN input still reaches every output through exp(NaN - max) in the sum.
        float mx = -__int_as_float(0x7f800000);
        for (int a = tid; a < len; a += THREADS) mx = fmaxf(mx, ld(xr[a * inner]));
        mx = block_max<THREADS>(mx, partial);

        float s = 0.f;
        for (int a = tid; a < len; a += THREADS) s = __fadd_rn(s, expf(__fsub_rn(ld(xr[a * inner]), mx)));
        s = block_sum<THREADS>(s, partial);

        for (int a = tid; a < len; a += THREADS) {
            yr[a * inner] = to_elem(__fdiv_rn(expf(__fsub_rn(ld(xr[a * inner]), mx)), s));
        }
    }
}

// Matrix products for gemm.py (and conv.py's im2col tactic). Determinism: in sgemm_tiled each output element
// is written by one thread that sums its K products in increasing k, with no split-K and no atomics, so the
// result does not depend on scheduling. sgemm_splitk_atomic is the deliberate exception.

#include "dtype.cuh"
#include "epilogue.cuh"

// The tile sizes: the one place they are written (gemm.py reads them from here, for its grids and parameters).
#define BM 64   // rows of C per block
#define BN 64   // columns of C per block
#define BK 8    // K slice staged in shared memory per step
#define TM 4    // rows per thread: ty, ty + 16, ty + 32, ty + 48
#define TN 4    // columns per thread: tx, tx + 16, tx + 32, tx + 48
#define THREADS 256
#define TX (BN / TN)  // threads along a row of the tile (tx = threadIdx.x % TX, ty = threadIdx.x / TX)

// acc += A(m0.., k_begin..k_end) @ B(k_begin..k_end, n0..) for this thread's TM x TN outputs, where
// A(m, k) = az[m*a_rs + k*a_cs] and B(k, n) = bz[k*b_rs + n*b_cs]; general strides give transposes for free.
// K is consumed in increasing order, BK at a time, so each thread's sums have a fixed order.
// T is float, or dtype.cuh's elem_t (staged widened to float, so a half GEMM accumulates in float32).
template <typename T>
__device__ __forceinline__ void tile_accumulate(
    float (&acc)[TM][TN], float (*as)[BM + 4], float (*bs)[BN], const T* __restrict__ az,
    const T* __restrict__ bz, int m, int n, int k_begin, int k_end,
    long long a_rs, long long a_cs, long long b_rs, long long b_cs, int m0, int n0)
{
    const int tid = threadIdx.x;
    const int tx = tid % TX;
    const int ty = tid / TX;
    for (int k0 = k_begin; k0 < k_end; k0 += BK) {
        // Out-of-range elements are staged as zeros: they add exact +0 products, which change no sum.
        for (int e = tid; e < BM * BK; e += THREADS) {
            const int r = e / BK, kk = e % BK;
            const int gm = m0 + r, gk = k0 + kk;
            as[kk][r] = (gm < m && gk < k_end) ? ld(az[gm * a_rs + gk * a_cs]) : 0.f;
        }
        for (int e = tid; e < BK * BN; e += THREADS) {
            const int kk = e / BN, cn = e % BN;
            const int gk = k0 + kk, gn = n0 + cn;
            bs[kk][cn] = (gk < k_end && gn < n) ? ld(bz[gk * b_rs + gn * b_cs]) : 0.f;
        }
        __syncthreads();
        #pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
            float ra[TM], rb[TN];
            #pragma unroll
            for (int i = 0; i < TM; ++i) ra[i] = as[kk][ty + TX * i];
            #pragma unroll
            for (int j = 0; j < TN; ++j) rb[j] = bs[kk][tx + TX * j];
            #pragma unroll
            for (int i = 0; i < TM; ++i) {
                #pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] += ra[i] * rb[j];
            }
        }
        __syncthreads();
    }
}

// This thread's TM x TN accumulators, zeroed.
__device__ __forceinline__ void zero_accumulators(float (&acc)[TM][TN])
{
    #pragma unroll
    for (int i = 0; i < TM; ++i) {
        #pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = 0.f;
    }
}

// store(gm, gn, acc[i][j]) for each of this thread's outputs (gm, gn) = (m0 + ty + TX*i, n0 + tx + TX*j) that
// lies inside the m x n product: the one walk over a thread's outputs that every kernel here stores through.
template <typename Store>
__device__ __forceinline__ void store_outputs(const float (&acc)[TM][TN], int m, int n, int m0, int n0, Store store)
{
    static_assert(THREADS == TX * (BM / TM), "each thread holds TM x TN outputs of the BM x BN tile");
    const int tx = threadIdx.x % TX;
    const int ty = threadIdx.x / TX;
    #pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int gm = m0 + ty + TX * i;
        if (gm >= m) continue;
        #pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int gn = n0 + tx + TX * j;
            if (gn < n) store(gm, gn, acc[i][j]);
        }
    }
}

// out[z] = alpha * A[z] @ B[z] + beta * C[z] for z = blockIdx.z, A and B read as in tile_accumulate from
// a + offsets[z][0] and b + offsets[z][1] (a zero batch offset broadcasts an operand). out(m, n) =
// out[offsets[z][2] + m*ldo + n]; C(m, n) = c[offsets[z][3] + m*c_rs + n*c_cs] (stride 0 broadcasts a bias).
// Launch: grid (ceil(n/BN), ceil(m/BM), batch), THREADS threads.
extern "C" __global__ void __launch_bounds__(THREADS) sgemm_tiled(
    const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ out,
    const float* __restrict__ c, const long long* __restrict__ offsets,
    int m, int n, int k,
    long long a_rs, long long a_cs, long long b_rs, long long b_cs, long long ldo,
    long long c_rs, long long c_cs, float alpha, float beta, int has_c)
{
    // +4 columns: the A tile is stored transposed, and without padding the 8 threads that store one row's K
    // slice would all hit the same bank.
    __shared__ float as[BK][BM + 4];
    __shared__ float bs[BK][BN];

    const long long* off = offsets + 4LL * blockIdx.z;
    const int m0 = blockIdx.y * BM;
    const int n0 = blockIdx.x * BN;

    float acc[TM][TN];
    zero_accumulators(acc);
    tile_accumulate(acc, as, bs, a + off[0], b + off[1], m, n, 0, k, a_rs, a_cs, b_rs, b_cs, m0, n0);

    float* outz = out + off[2];
    const float* cz = c + (has_c ? off[3] : 0);
    store_outputs(acc, m, n, m0, n0, [&](int gm, int gn, float sum) {
        // Rounded exactly as the CPU tactics do: alpha * acc, then + beta * C, each product rounded once.
        float v = __fmul_rn(alpha, sum);
        if (has_c) v = __fadd_rn(v, __fmul_rn(beta, cz[gm * c_rs + gn * c_cs]));
        outz[gm * ldo + gn] = v;
    });
}

// FusedGemm in one kernel (gemm.py cuda_tiled_epilogue): out(r, q) for the rows r of A (m, k) and B (k, n), both
// row-major and contiguous, = the product rounded to the element type (as MatMul stores it), + bias[q] rounded
// (as Add stores it), then epilogue.cuh's residual and activation. Written on elem_t, accumulated in float.
// Launch: grid (ceil(n/BN), ceil(m/BM)), THREADS threads.
extern "C" __global__ void __launch_bounds__(THREADS) gemm_tiled_epilogue(
    const elem_t* __restrict__ a, const elem_t* __restrict__ b, elem_t* __restrict__ out,
    const elem_t* __restrict__ bias, const elem_t* __restrict__ residual, int m, int n, int k, int act, float lo,
    float hi)
{
    __shared__ float as[BK][BM + 4];
    __shared__ float bs[BK][BN];
    const int m0 = blockIdx.y * BM;
    const int n0 = blockIdx.x * BN;
    float acc[TM][TN];
    zero_accumulators(acc);
    tile_accumulate(acc, as, bs, a, b, m, n, 0, k, k, 1, n, 1, m0, n0);
    store_outputs(acc, m, n, m0, n0, [&](int gm, int gn, float sum) {
        const long long idx = (long long)gm * n + gn;
        const float v = rnd(__fadd_rn(rnd(sum), ld(bias[gn])));
        out[idx] = to_elem(residual_activation(v, residual, idx, act, lo, hi));
    });
}

// NOT deterministic, on purpose: K is split over gridDim.z blocks of k_per_split each, and every block adds
// the partial sum of each BK-wide step into out with atomicAdd as soon as it has it, so the blocks' atomics on
// the same outputs interleave, and the float additions round, in an order that depends on timing. Each block
// also starts its walk over its K steps at a step picked from the global nanosecond timer: on an idle H100,
// blocks of equal work that each have an SM to themselves otherwise keep the same relative timing run after
// run, and atomics are then nondeterministic in name only. It exists so that the determinism policy, verify
// and the divergence locator meet the real thing. out must be zero before the launch.
// Launch: grid (ceil(n/BN), ceil(m/BM), ceil(k/k_per_split)), THREADS threads.
extern "C" __global__ void __launch_bounds__(THREADS) sgemm_splitk_atomic(
    const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ out,
    int m, int n, int k, long long a_rs, long long a_cs, long long b_rs, long long b_cs, long long ldo,
    int k_per_split)
{
    __shared__ float as[BK][BM + 4];
    __shared__ float bs[BK][BN];
    const int m0 = blockIdx.y * BM;
    const int n0 = blockIdx.x * BN;
    const int k_begin = blockIdx.z * k_per_split;
    const int k_end = min(k, k_begin + k_per_split);
    const int steps = (k_end - k_begin + BK - 1) / BK;
    __shared__ int first;
    if (threadIdx.x == 0) {
        unsigned long long now;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
        first = steps > 0 ? (int)((now >> 5) % (unsigned long long)steps) : 0;
    }
    __syncthreads();  // every thread of the block must walk the same steps: they share the staged tiles

    for (int s = 0; s < steps; ++s) {
        const int k0 = k_begin + ((first + s) % steps) * BK;
        float acc[TM][TN];
        zero_accumulators(acc);
        tile_accumulate(acc, as, bs, a, b, m, n, k0, min(k_end, k0 + BK), a_rs, a_cs, b_rs, b_cs, m0, n0);
        store_outputs(acc, m, n, m0, n0, [&](int gm, int gn, float sum) { atomicAdd(&out[gm * ldo + gn], sum); });
    }
}

// out = alpha * out + beta * C after a cuBLAS product; out is (rows, cols) contiguous, C(r, q) = c[r*c_rs + q*c_cs].
// Written on dtype.cuh's elem_t (a float32 and a float16 build), computed in float, stored once.
extern "C" __global__ void gemm_epilogue(
    elem_t* __restrict__ out, const elem_t* __restrict__ c, long long rows, long long cols,
    long long c_rs, long long c_cs, float alpha, float beta, int has_c)
{
    const long long total = rows * cols;
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const long long r = i / cols, q = i - r * cols;
        float v = __fmul_rn(alpha, ld(out[i]));
        if (has_c) v = __fadd_rn(v, __fmul_rn(beta, ld(c[r * c_rs + q * c_cs])));
        out[i] = to_elem(v);
    }
}

// out[0:total] = 0 (the split-K GEMM accumulates into a zeroed output); a kernel, so that it is part of the plan.
extern "C" __global__ void fill_zero(float* __restrict__ out, long long total)
{
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        out[i] = 0.f;
    }
}

// FusedGemm's epilogue after a cuBLAS product (gemm.py cuda_cublas_epilogue): out is (total / n, n) contiguous;
// out = residual_activation(out + bias[column]), the bias sum rounded as Add stores it.
extern "C" __global__ void gemm_bias_epilogue(
    elem_t* out, const elem_t* __restrict__ bias, const elem_t* residual, long long n, long long total, int act,
    float lo, float hi)
{
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
        const float v = rnd(__fadd_rn(ld(out[idx]), ld(bias[idx % n])));
        out[idx] = to_elem(residual_activation(v, residual, idx, act, lo, hi));
    }
}

// Implicit-GEMM convolution on tensor cores, for conv.py's cuda_implicit_gemm_mma tactics: float16 and bfloat16
// builds only (mma.sync m16n8k16 with float32 accumulation; sm_80 or newer).
//
// The convolution is the product out[m][p] = sum_k W[m][k] * X[k][p], M = output channels, P = N*OH*OW output
// positions, K = C*KH*KW, k = (c, i, j) in the weight's (C, KH, KW) order, without materialising X (im2col): a
// block of BM x BN outputs walks K in BK = 32 wide steps; each step stages a BM x BK slice of the weight and the
// BK x BN slice of X it gathers straight from the NCHW input into shared memory (double-buffered: the next step's
// loads are in flight while this step's mma instructions run), and its warps each multiply a (BM/WM) x (BN/WN)
// part with m16n8k16 mma instructions. Every output's sum runs over k in the same fixed order (BK steps in order,
// two k16 halves of each in order, the tensor core's fixed order within), whatever the timing: no atomics, no
// split K. The block shape is a compile-time template parameter; conv.py instantiates one tactic per shape.
//
// Operands: the weight is (M, Kp) with Kp = K rounded up to BK and zero padding (16-byte rows, loaded as uint4);
// ktab[k] = (offset of x[0][c][i*dh][j*dw] from x[0][0][0][0], i*dh, j*dw, 0), and the padding rows k >= K have a
// row offset no input reaches, so they read zeros. The epilogue adds the bias to the float32 sum and rounds once
// (as the unfused Conv stores its output), then applies epilogue.cuh's residual and activation, through shared
// memory so that the output and the residual are read and written along P, coalesced.
#include "dtype.cuh"
#include "epilogue.cuh"

#if defined(REPRO_HALF) || defined(REPRO_BF16)

#if defined(REPRO_HALF)
#define MMA_AB "f16"
__device__ __forceinline__ unsigned short bits_of(unsigned short v) { return v; }
__device__ __forceinline__ elem_t from_bits(unsigned short v) { return v; }
#else
#define MMA_AB "bf16"
__device__ __forceinline__ unsigned short bits_of(bf16_t v) { return v.bits; }
__device__ __forceinline__ elem_t from_bits(unsigned short v) { bf16_t b; b.bits = v; return b; }
#endif

#define BK 32
#define PAD 8             // elements of padding per shared row: fragment loads and stores free of bank conflicts
#define LDS (BK + PAD)    // shared row length of a weight or an input slice (80 bytes, 16-byte aligned)
#define NO_ROW (1 << 29)  // ktab's row offset for k >= K: out of every input's bounds

// c (float32, 16x8) += a (16x16, row-major) * b (16x8, column-major), PTX's fragment layouts.
__device__ __forceinline__ void mma_16816(float* c, const unsigned* a, const unsigned* b)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." MMA_AB "." MMA_AB ".f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

template <int BM, int BN, int WM, int WN>
__device__ __forceinline__ void conv_mma(
    const unsigned short* __restrict__ x, const unsigned short* __restrict__ wt, const int4* __restrict__ ktab,
    const float* __restrict__ bias, const elem_t* residual, elem_t* out,
    int c, int h, int w, int m, int kp, int oh, int ow, int pt, int pl, int sh, int sw, long long npq,
    int act, float lo, float hi)
{
    constexpr int T = WM * WN * 32;
    constexpr int TM = BM / WM, TN = BN / WN, MF = TM / 16, NF = TN / 8;
    constexpr int A_VECS = BM * BK / 8 / T;    // 16-byte weight vectors a thread loads per step
    constexpr int PASS = T / BN;               // k pairs the block gathers at once (a thread: one column)
    constexpr int B_PAIRS = BK / 2 / PASS;     // k pairs a thread gathers per step
    constexpr int STAGE = (BM + BN) * LDS;     // elements of one buffer
    constexpr int LDC = BN + PAD;              // shared row length of the output tile
    constexpr int MAIN_BYTES = 2 * STAGE * 2, OUT_BYTES = BM * LDC * 2;
    static_assert(TM % 16 == 0 && TN % 8 == 0 && T % BN == 0 && (BM * BK / 8) % T == 0 && (BK / 2) % PASS == 0,
                  "block shape");
    __shared__ __align__(16) unsigned char smem[MAIN_BYTES > OUT_BYTES ? MAIN_BYTES : OUT_BYTES];
    unsigned short* sm = reinterpret_cast<unsigned short*>(smem);

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp / WN, wn = warp % WN, g = lane >> 2, t4 = lane & 3;
    const int m0 = blockIdx.y * BM;

    // The output position this thread gathers (and, in the epilogue, stores): one column p of the tile.
    const int pcol = tid % BN, prow = tid / BN;
    const long long p = (long long)blockIdx.x * BN + pcol;
    const bool pvalid = p < npq;
    const long long plane = (long long)oh * ow;
    long long img = 0, xbase = 0;
    int r = 0, iy0 = 0, ix0 = 0;
    if (pvalid) {
        img = p / plane;
        r = (int)(p - img * plane);
        const int oy = r / ow, ox = r - oy * ow;
        iy0 = oy * sh - pt;
        ix0 = ox * sw - pl;
        xbase = img * c * h * w + (long long)iy0 * w + ix0;
    }

    uint4 areg[A_VECS];
    unsigned breg[B_PAIRS];
    float acc[MF][NF][4];
#pragma unroll
    for (int i = 0; i < MF; ++i)
#pragma unroll
        for (int j = 0; j < NF; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

    auto load = [&](int k0) {
#pragma unroll
        for (int i = 0; i < A_VECS; ++i) {
            const int v = tid + i * T, row = v / (BK / 8), col = v % (BK / 8);
            const int gm = m0 + row;
            areg[i] = gm < m ? *reinterpret_cast<const uint4*>(wt + (long long)gm * kp + k0 + col * 8)
                             : make_uint4(0u, 0u, 0u, 0u);
        }
#pragma unroll
        for (int i = 0; i < B_PAIRS; ++i) {
            const int kk = k0 + 2 * (prow + i * PASS);
            unsigned pair = 0u;
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const int4 t = __ldg(ktab + kk + e);
                const int iy = iy0 + t.y, ix = ix0 + t.z;
                if (pvalid && (unsigned)iy < (unsigned)h && (unsigned)ix < (unsigned)w)
                    pair |= (unsigned)x[xbase + t.x] << (16 * e);
            }
            breg[i] = pair;
        }
    };
    auto store = [&](int stage) {
        unsigned short* as = sm + stage * STAGE;
        unsigned short* bs = as + BM * LDS;
#pragma unroll
        for (int i = 0; i < A_VECS; ++i) {
            const int v = tid + i * T, row = v / (BK / 8), col = v % (BK / 8);
            *reinterpret_cast<uint4*>(as + row * LDS + col * 8) = areg[i];
        }
#pragma unroll
        for (int i = 0; i < B_PAIRS; ++i)
            *reinterpret_cast<unsigned*>(bs + pcol * LDS + 2 * (prow + i * PASS)) = breg[i];
    };
    auto compute = [&](int stage) {
        const unsigned short* as = sm + stage * STAGE;
        const unsigned short* bs = as + BM * LDS;
#pragma unroll
        for (int ks = 0; ks < BK; ks += 16) {
            unsigned a[MF][4], b[NF][2];
#pragma unroll
            for (int i = 0; i < MF; ++i) {
                const unsigned short* r0 = as + (wm * TM + i * 16 + g) * LDS + ks + 2 * t4;
                a[i][0] = *reinterpret_cast<const unsigned*>(r0);
                a[i][1] = *reinterpret_cast<const unsigned*>(r0 + 8 * LDS);
                a[i][2] = *reinterpret_cast<const unsigned*>(r0 + 8);
                a[i][3] = *reinterpret_cast<const unsigned*>(r0 + 8 * LDS + 8);
            }
#pragma unroll
            for (int j = 0; j < NF; ++j) {
                const unsigned short* c0 = bs + (wn * TN + j * 8 + g) * LDS + ks + 2 * t4;
                b[j][0] = *reinterpret_cast<const unsigned*>(c0);
                b[j][1] = *reinterpret_cast<const unsigned*>(c0 + 8);
            }
#pragma unroll
            for (int i = 0; i < MF; ++i)
#pragma unroll
                for (int j = 0; j < NF; ++j) mma_16816(acc[i][j], a[i], b[j]);
        }
    };

    const int steps = kp / BK;
    load(0);
    store(0);
    __syncthreads();
    for (int s = 0; s < steps; ++s) {
        if (s + 1 < steps) load((s + 1) * BK);
        compute(s & 1);
        if (s + 1 < steps) store((s + 1) & 1);
        __syncthreads();
    }

    // The convolution's output (+ bias, rounded once) into shared memory, as the element type...
    unsigned short* cs = sm;
#pragma unroll
    for (int i = 0; i < MF; ++i) {
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
            const int row = wm * TM + i * 16 + g + 8 * hh;
            const float b = bias != nullptr && m0 + row < m ? bias[m0 + row] : 0.f;
#pragma unroll
            for (int j = 0; j < NF; ++j) {
                const int col = wn * TN + j * 8 + 2 * t4;
                float v0 = acc[i][j][2 * hh], v1 = acc[i][j][2 * hh + 1];
                if (bias != nullptr) {
                    v0 = __fadd_rn(v0, b);
                    v1 = __fadd_rn(v1, b);
                }
                *reinterpret_cast<unsigned*>(cs + row * LDC + col) =
                    (unsigned)bits_of(to_elem(v0)) | ((unsigned)bits_of(to_elem(v1)) << 16);
            }
        }
    }
    __syncthreads();
    // ... then residual and activation, each thread along its column p, the block's threads along P.
    if (!pvalid) return;
    const long long obase = img * m * plane + r;
    for (int row = prow; row < BM && m0 + row < m; row += PASS) {
        const long long idx = obase + (long long)(m0 + row) * plane;
        const float v = ld(from_bits(cs[row * LDC + pcol]));
        out[idx] = to_elem(residual_activation(v, residual, idx, act, lo, hi));
    }
}

#define CONV_MMA(BM, BN, WM, WN)                                                                                  \
    extern "C" __global__ void __launch_bounds__(WM * WN * 32) conv_mma_##BM##x##BN(                             \
        const unsigned short* __restrict__ x, const unsigned short* __restrict__ wt,                           \
        const int4* __restrict__ ktab, const float* __restrict__ bias, const elem_t* residual, elem_t* out,    \
        int c, int h, int w, int m, int kp, int oh, int ow, int pt, int pl, int sh, int sw, long long npq,     \
        int act, float lo, float hi)                                                                           \
    {                                                                                                          \
        conv_mma<BM, BN, WM, WN>(x, wt, ktab, bias, residual, out, c, h, w, m, kp, oh, ow, pt, pl, sh, sw,     \
                                 npq, act, lo, hi);                                                            \
    }

CONV_MMA(128, 128, 2, 4)
CONV_MMA(128, 64, 2, 2)
CONV_MMA(64, 128, 2, 2)
CONV_MMA(64, 64, 2, 2)

#endif

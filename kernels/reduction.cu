// ReduceSum, ReduceMean, ReduceMax and ReduceMin for reduction.py, over the input viewed as (outer, len, inner):
// the reduced axes, contiguous once dimensions of size 1 are dropped, are the middle one. Statistics in float
// whatever the storage (the reference widens float16 and bfloat16 to float32 too), the result rounded once.
// Fixed order everywhere, no atomics: the same inputs give the same bits on every run and every GPU.
// Max and Min propagate NaN, as NumPy's do; an empty reduction gives the op's identity (0, -inf, +inf; the mean
// of nothing is 0 / 0, NaN).

// Written on dtype.cuh's elem_t (a float32, a float16 and a bfloat16 build).
#include "dtype.cuh"
#include "reduce.cuh"

#define THREADS 256  // the block size (cuda_launch.BLOCK); a power of two for the tree
#define OP_SUM 0
#define OP_MEAN 1
#define OP_MAX 2
#define OP_MIN 3

// NaN-propagating max and min: a NaN operand wins (fmaxf/fminf would skip it).
struct NanMaxOp {
    __device__ __forceinline__ float operator()(float a, float b) const { return (a != a || a > b) ? a : b; }
};
struct NanMinOp {
    __device__ __forceinline__ float operator()(float a, float b) const { return (a != a || a < b) ? a : b; }
};

__device__ __forceinline__ float identity_of(int op)
{
    const float inf = __int_as_float(0x7f800000);
    return op == OP_MAX ? -inf : (op == OP_MIN ? inf : 0.f);
}

__device__ __forceinline__ float combine(int op, float a, float b)
{
    if (op == OP_MAX) return NanMaxOp()(a, b);
    if (op == OP_MIN) return NanMinOp()(a, b);
    return __fadd_rn(a, b);
}

// inner == 1: one block per row of `len` contiguous elements, rows striding by the grid. Thread t combines
// elements t, t + THREADS, ... in order, then reduce.cuh's fixed tree combines the THREADS partial results.
extern "C" __global__ void __launch_bounds__(THREADS) reduce_rows(
    const elem_t* __restrict__ x, elem_t* __restrict__ out, long long rows, long long len, int op)
{
    __shared__ float partial[THREADS];
    const int tid = threadIdx.x;
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const elem_t* xr = x + r * len;
        float acc = identity_of(op);
        for (long long a = tid; a < len; a += THREADS) acc = combine(op, acc, ld(xr[a]));
        float result;
        if (op == OP_MAX) result = block_reduce<THREADS>(acc, partial, NanMaxOp());
        else if (op == OP_MIN) result = block_reduce<THREADS>(acc, partial, NanMinOp());
        else result = block_sum<THREADS>(acc, partial);
        if (op == OP_MEAN) result = __fdiv_rn(result, (float)len);
        if (tid == 0) out[r] = to_elem(result);
    }
}

// inner > 1: one thread per output element (o, w), reading x[o][0..len)[w] in order (neighbouring threads read
// neighbouring words). Sums are accumulated in double, so a long column loses nothing to the order, then rounded
// to float once.
extern "C" __global__ void reduce_cols(
    const elem_t* __restrict__ x, elem_t* __restrict__ out, long long outer, long long len, long long inner, int op)
{
    const long long total = outer * inner;
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const long long o = i / inner, w = i - o * inner;
        const elem_t* xc = x + o * len * inner + w;
        float result;
        if (op == OP_MAX || op == OP_MIN) {
            result = identity_of(op);
            for (long long a = 0; a < len; ++a) result = combine(op, result, ld(xc[a * inner]));
        } else {
            double acc = 0.0;
            for (long long a = 0; a < len; ++a) acc = __dadd_rn(acc, (double)ld(xc[a * inner]));
            result = (float)acc;
            if (op == OP_MEAN) result = __fdiv_rn(result, (float)len);
        }
        out[i] = to_elem(result);
    }
}

// CumSum along the middle axis of the (outer, len, inner) view: one thread per column (o, w), adding in order from
// the first element (the last with `reverse`), as NumPy's cumsum does, so float32 results equal the reference's
// bit for bit; float16 and bfloat16 accumulate in float and round each output once. `exclusive` writes the sum
// before each element. Each element is read before its output is written.
extern "C" __global__ void cumsum_cols(
    const elem_t* x, elem_t* out, long long outer, long long len, long long inner, int exclusive, int reverse)
{
    const long long total = outer * inner;
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const long long o = i / inner, w = i - o * inner, base = o * len * inner + w;
        float acc = 0.f;
        for (long long a = 0; a < len; ++a) {
            const long long at = base + (reverse ? len - 1 - a : a) * inner;
            const float v = ld(x[at]);
            if (exclusive) out[at] = to_elem(acc);
            acc = __fadd_rn(acc, v);
            if (!exclusive) out[at] = to_elem(acc);
        }
    }
}

// The same for int32 and int64 (any build): sums wrap, as onnxruntime's and NumPy's do (added as unsigned, where
// C++ defines the wrap).
template <typename T, typename U>
__device__ __forceinline__ void cumsum_int(
    const T* x, T* out, long long outer, long long len, long long inner, int exclusive, int reverse)
{
    const long long total = outer * inner;
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const long long o = i / inner, w = i - o * inner, base = o * len * inner + w;
        U acc = 0;
        for (long long a = 0; a < len; ++a) {
            const long long at = base + (reverse ? len - 1 - a : a) * inner;
            const U v = (U)x[at];
            if (exclusive) out[at] = (T)acc;
            acc += v;
            if (!exclusive) out[at] = (T)acc;
        }
    }
}

extern "C" __global__ void cumsum_cols_i32(
    const int* x, int* out, long long outer, long long len, long long inner, int exclusive, int reverse)
{
    cumsum_int<int, unsigned int>(x, out, outer, len, inner, exclusive, reverse);
}
extern "C" __global__ void cumsum_cols_i64(
    const long long* x, long long* out, long long outer, long long len, long long inner, int exclusive, int reverse)
{
    cumsum_int<long long, unsigned long long>(x, out, outer, len, inner, exclusive, reverse);
}

// ReduceSum, ReduceMax and ReduceMin of int32, int64 and bool (any build): one thread per output element reading
// its len elements in order (integer results do not depend on the order: sums wrap, as NumPy's do, added as
// unsigned where C++ defines the wrap). An empty reduction gives the identity: 0, the lowest or the highest value
// (for bool, Max is "any": false, and Min "all": true).
template <typename T, typename U>
__device__ __forceinline__ void reduce_exact(
    const T* x, T* out, long long outer, long long len, long long inner, int op, T lowest, T highest)
{
    const long long total = outer * inner;
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const long long o = i / inner, w = i - o * inner;
        const T* xc = x + o * len * inner + w;
        if (op == OP_SUM) {
            U acc = 0;
            for (long long a = 0; a < len; ++a) acc += (U)xc[a * inner];
            out[i] = (T)acc;
        } else {
            T acc = op == OP_MAX ? lowest : highest;
            for (long long a = 0; a < len; ++a) {
                const T v = xc[a * inner];
                acc = op == OP_MAX ? (v > acc ? v : acc) : (v < acc ? v : acc);
            }
            out[i] = acc;
        }
    }
}

extern "C" __global__ void reduce_exact_i32(
    const int* x, int* out, long long outer, long long len, long long inner, int op)
{
    reduce_exact<int, unsigned int>(x, out, outer, len, inner, op, (int)0x80000000, 0x7fffffff);
}
extern "C" __global__ void reduce_exact_i64(
    const long long* x, long long* out, long long outer, long long len, long long inner, int op)
{
    reduce_exact<long long, unsigned long long>(x, out, outer, len, inner, op, (long long)0x8000000000000000ull,
                                                0x7fffffffffffffffll);
}
// bool is one byte, 0 or 1: Max is any, Min is all.
extern "C" __global__ void reduce_exact_bool(
    const unsigned char* x, unsigned char* out, long long outer, long long len, long long inner, int op)
{
    reduce_exact<unsigned char, unsigned char>(x, out, outer, len, inner, op, 0, 1);
}

// Elementwise kernels for elementwise.py: Add / Mul / copy with numpy broadcasting, and Relu.
// Each output element is one rounded operation of its inputs, so results match NumPy's bit for bit. And the
// casts between float32 and float16 or bfloat16 that --precision fp16/bf16 puts at a network's inputs and outputs
// (built per dtype on dtype.cuh's elem_t; the other kernels are float32 in every build).

#include "dtype.cuh"

#define OP_ADD 0
#define OP_MUL 1
#define OP_COPY 2  // out = a (Sum of a single input)
#define MAX_RANK 6

__device__ __forceinline__ float apply(int op, float a, float b)
{
    if (op == OP_ADD) return __fadd_rn(a, b);
    if (op == OP_MUL) return __fmul_rn(a, b);
    return a;
}

// All three arrays have the output's shape and layout. `a` may be `out` itself (Sum's running total), so no
// pointer is __restrict__.
extern "C" __global__ void binary_same(const float* a, const float* b, float* out, int op, long long total)
{
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        out[i] = apply(op, a[i], b[i]);
    }
}

// out is contiguous of shape meta[0:rank]; a(index) = a[sum index[d] * meta[MAX_RANK + d]], b likewise with
// meta[2*MAX_RANK + d]. A stride of 0 broadcasts that dimension. The host merges dimensions first, so rank is
// small; `a` may be `out` (with out's strides).
extern "C" __global__ void binary_broadcast(
    const float* a, const float* b, float* out, const long long* __restrict__ meta, int op, int rank,
    long long total)
{
    long long shape[MAX_RANK], sa[MAX_RANK], sb[MAX_RANK];
    for (int d = 0; d < rank; ++d) {
        shape[d] = meta[d];
        sa[d] = meta[MAX_RANK + d];
        sb[d] = meta[2 * MAX_RANK + d];
    }
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        long long t = i, ia = 0, ib = 0;
        for (int d = rank - 1; d >= 0; --d) {
            const long long q = t % shape[d];
            t /= shape[d];
            ia += q * sa[d];
            ib += q * sb[d];
        }
        out[i] = apply(op, a[ia], b[ib]);
    }
}

// max(x, 0) as np.maximum(x, 0) computes it: NaN stays NaN, and -0 becomes +0. x may be out (in place).
extern "C" __global__ void relu(const float* x, float* out, long long total)
{
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const float v = x[i];
        out[i] = v != v ? v : (v > 0.f ? v : 0.f);
    }
}

// Cast float32 -> the build's element type (float16 or bfloat16; ONNX Cast, NumPy's astype): round to nearest
// even, beyond the largest finite value to infinity, NaN stays NaN. total elements, both contiguous.
extern "C" __global__ void cast_from_float(const float* __restrict__ x, elem_t* __restrict__ out, long long total)
{
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) out[i] = to_elem(x[i]);
}

// Cast the build's element type -> float32: exact.
extern "C" __global__ void cast_to_float(const elem_t* __restrict__ x, float* __restrict__ out, long long total)
{
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) out[i] = ld(x[i]);
}

// Fixed-order block reductions, for the kernels that reduce a row or a plane with one block (softmax.cu, norm.cu,
// pool.cu). Every thread of the block passes its partial result; they meet in shared memory and a fixed tree
// combines them: partial[t] with partial[t + half] for half = Size/2, Size/4, ..., 1. The same values are
// combined in the same order on every run and every GPU, whatever the scheduling, with no atomics.
// Size is the block size, a power of two; partial is Size floats of shared memory, free again when a call returns.
// Every thread of the block must call, and gets the result.
#pragma once

struct SumOp {
    __device__ __forceinline__ float operator()(float a, float b) const { return __fadd_rn(a, b); }
};
// fmaxf skips a NaN operand; a caller whose NaN must win (softmax) gets it through what follows the max.
struct MaxOp {
    __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

template <int Size, typename Op>
__device__ __forceinline__ float block_reduce(float v, float* partial, Op op)
{
    static_assert(Size > 0 && (Size & (Size - 1)) == 0, "the tree halves the block: its size is a power of two");
    const int tid = threadIdx.x;
    partial[tid] = v;
    __syncthreads();
    for (int half = Size / 2; half > 0; half /= 2) {
        if (tid < half) partial[tid] = op(partial[tid], partial[tid + half]);
        __syncthreads();
    }
    const float result = partial[0];
    __syncthreads();  // every thread has read the result before partial is written again
    return result;
}

// The sum of every thread's v, by the fixed tree.
template <int Size>
__device__ __forceinline__ float block_sum(float v, float* partial)
{
    return block_reduce<Size>(v, partial, SumOp());
}

// The largest of every thread's v (fmaxf: a NaN is skipped), by the fixed tree.
template <int Size>
__device__ __forceinline__ float block_max(float v, float* partial)
{
    return block_reduce<Size>(v, partial, MaxOp());
}

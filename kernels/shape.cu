// Concat for shape.py, as block copies: each input is a contiguous (rows, cols) array copied to columns
// [dst_off, dst_off + cols) of the (rows, dst_ld) output. Elements are moved as 32-bit words where every size
// and offset allows it, else as bytes, so one kernel serves every dtype.

template <typename T>
__device__ __forceinline__ void copy_block(
    const T* __restrict__ src, T* __restrict__ dst, long long rows, long long cols, long long dst_ld,
    long long dst_off)
{
    const long long total = rows * cols;
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const long long r = i / cols, q = i - r * cols;
        dst[r * dst_ld + dst_off + q] = src[i];
    }
}

extern "C" __global__ void copy_block_u32(
    const unsigned int* src, unsigned int* dst, long long rows, long long cols, long long dst_ld,
    long long dst_off)
{
    copy_block(src, dst, rows, cols, dst_ld, dst_off);
}

extern "C" __global__ void copy_block_u8(
    const unsigned char* src, unsigned char* dst, long long rows, long long cols, long long dst_ld,
    long long dst_off)
{
    copy_block(src, dst, rows, cols, dst_ld, dst_off);
}

// Transpose: dst (contiguous, shape meta[0:rank]) at index (q_0..q_{rank-1}) = src[sum q_d * meta[MAX_RANK + d]],
// the source strides permuted into the output's order. Elements are moved as words of their size.
#define MAX_RANK 6

template <typename T>
__device__ __forceinline__ void transpose_impl(
    const T* __restrict__ src, T* __restrict__ dst, const long long* __restrict__ meta, int rank, long long total)
{
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        long long t = i, off = 0;
        for (int d = rank - 1; d >= 0; --d) {
            const long long q = t % meta[d];
            t /= meta[d];
            off += q * meta[MAX_RANK + d];
        }
        dst[i] = src[off];
    }
}

extern "C" __global__ void transpose_u8(const unsigned char* src, unsigned char* dst, const long long* meta,
                                        int rank, long long total) { transpose_impl(src, dst, meta, rank, total); }
extern "C" __global__ void transpose_u16(const unsigned short* src, unsigned short* dst, const long long* meta,
                                         int rank, long long total) { transpose_impl(src, dst, meta, rank, total); }
extern "C" __global__ void transpose_u32(const unsigned int* src, unsigned int* dst, const long long* meta,
                                         int rank, long long total) { transpose_impl(src, dst, meta, rank, total); }
extern "C" __global__ void transpose_u64(const unsigned long long* src, unsigned long long* dst,
                                         const long long* meta, int rank, long long total)
{
    transpose_impl(src, dst, meta, rank, total);
}

// Gather along an axis with indices known at build time (already in [0, axis_len)): the data viewed as
// (outer, axis_len, inner) words, dst as (outer, n_idx, inner); dst[o][j][w] = src[o][idx[j]][w].
template <typename T>
__device__ __forceinline__ void gather_impl(
    const T* __restrict__ src, const long long* __restrict__ idx, T* __restrict__ dst, long long n_idx,
    long long axis_len, long long inner, long long total)
{
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const long long w = i % inner, r = i / inner, j = r % n_idx, o = r / n_idx;
        dst[i] = src[(o * axis_len + idx[j]) * inner + w];
    }
}

extern "C" __global__ void gather_u8(const unsigned char* src, const long long* idx, unsigned char* dst,
                                     long long n_idx, long long axis_len, long long inner, long long total)
{
    gather_impl(src, idx, dst, n_idx, axis_len, inner, total);
}
extern "C" __global__ void gather_u32(const unsigned int* src, const long long* idx, unsigned int* dst,
                                      long long n_idx, long long axis_len, long long inner, long long total)
{
    gather_impl(src, idx, dst, n_idx, axis_len, inner, total);
}

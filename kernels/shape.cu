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

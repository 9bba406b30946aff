// Index kernels for index.py: one strided gather that serves Slice, Split, Expand, Tile and constant-mode Pad, and a
// Gather whose indices arrive at run time. Elements are moved as unsigned words of their size, so one kernel of
// each width serves every dtype; nothing is computed, so results equal the reference's bit for bit.

#define MAX_RANK 8

// The strided gather. dst is contiguous, of shape meta[0:rank]. Output coordinate q_d (d < rank) reads the source
// element at base + sum_d (q_d mod meta[MOD + d]) * meta[COEF + d] (element offsets: a coefficient folds the
// source stride with a slice's step, 0 broadcasts, the modulus repeats a tiled axis), and the output element is
// `fill` instead wherever some q_d lies outside [meta[LO + d], meta[HI + d]) (the padding of a constant Pad).
// The host merges dimensions and drops those of size 1 first, so rank is small.
#define MOD (1 * MAX_RANK)
#define COEF (2 * MAX_RANK)
#define LO (3 * MAX_RANK)
#define HI (4 * MAX_RANK)

template <typename T>
__device__ __forceinline__ void strided_gather(
    const T* __restrict__ src, T* __restrict__ dst, const long long* __restrict__ meta, int rank, long long base,
    long long total, T fill)
{
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        long long t = i, off = base;
        bool inside = true;
        for (int d = rank - 1; d >= 0; --d) {
            const long long q = t % meta[d];
            t /= meta[d];
            inside = inside && q >= meta[LO + d] && q < meta[HI + d];
            off += (q % meta[MOD + d]) * meta[COEF + d];
        }
        dst[i] = inside ? src[off] : fill;
    }
}

extern "C" __global__ void strided_gather_u8(const unsigned char* src, unsigned char* dst, const long long* meta,
                                             int rank, long long base, long long total, unsigned long long fill)
{
    strided_gather(src, dst, meta, rank, base, total, (unsigned char)fill);
}
extern "C" __global__ void strided_gather_u16(const unsigned short* src, unsigned short* dst, const long long* meta,
                                              int rank, long long base, long long total, unsigned long long fill)
{
    strided_gather(src, dst, meta, rank, base, total, (unsigned short)fill);
}
extern "C" __global__ void strided_gather_u32(const unsigned int* src, unsigned int* dst, const long long* meta,
                                              int rank, long long base, long long total, unsigned long long fill)
{
    strided_gather(src, dst, meta, rank, base, total, (unsigned int)fill);
}
extern "C" __global__ void strided_gather_u64(const unsigned long long* src, unsigned long long* dst,
                                              const long long* meta, int rank, long long base, long long total,
                                              unsigned long long fill)
{
    strided_gather(src, dst, meta, rank, base, total, fill);
}

// Gather along an axis with indices read at run time (int32 or int64, negative ones counting from the end): the
// data viewed as (outer, axis_len, inner) words, dst as (outer, n_idx, inner); dst[o][j][w] = src[o][idx[j]][w].
// An index outside [-axis_len, axis_len) has no element to read: its slice of dst is written as zero words (the
// reference tactic refuses such an index; a kernel cannot raise, and must not read outside the buffer).
template <typename T, typename I>
__device__ __forceinline__ void gather_rt(
    const T* __restrict__ src, const I* __restrict__ idx, T* __restrict__ dst, long long n_idx,
    long long axis_len, long long inner, long long total)
{
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const long long w = i % inner, r = i / inner, j = r % n_idx, o = r / n_idx;
        long long k = (long long)idx[j];
        if (k < 0) k += axis_len;
        dst[i] = (k >= 0 && k < axis_len) ? src[(o * axis_len + k) * inner + w] : (T)0;
    }
}

extern "C" __global__ void gather_rt_u8_i32(const unsigned char* src, const int* idx, unsigned char* dst,
                                            long long n_idx, long long axis_len, long long inner, long long total)
{
    gather_rt(src, idx, dst, n_idx, axis_len, inner, total);
}
extern "C" __global__ void gather_rt_u8_i64(const unsigned char* src, const long long* idx, unsigned char* dst,
                                            long long n_idx, long long axis_len, long long inner, long long total)
{
    gather_rt(src, idx, dst, n_idx, axis_len, inner, total);
}
extern "C" __global__ void gather_rt_u32_i32(const unsigned int* src, const int* idx, unsigned int* dst,
                                             long long n_idx, long long axis_len, long long inner, long long total)
{
    gather_rt(src, idx, dst, n_idx, axis_len, inner, total);
}
extern "C" __global__ void gather_rt_u32_i64(const unsigned int* src, const long long* idx, unsigned int* dst,
                                             long long n_idx, long long axis_len, long long inner, long long total)
{
    gather_rt(src, idx, dst, n_idx, axis_len, inner, total);
}

// Rows gathered by offsets known at build time (GatherND with constant indices): dst, contiguous, is n_rows rows
// of `inner` elements; row j copies the `inner` elements of src from element offset off[j].
template <typename T>
__device__ __forceinline__ void gather_rows(
    const T* __restrict__ src, const long long* __restrict__ off, T* __restrict__ dst, long long inner,
    long long total)
{
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const long long j = i / inner, w = i - j * inner;
        dst[i] = src[off[j] + w];
    }
}

extern "C" __global__ void gather_rows_u8(const unsigned char* src, const long long* off, unsigned char* dst,
                                          long long inner, long long total)
{
    gather_rows(src, off, dst, inner, total);
}
extern "C" __global__ void gather_rows_u16(const unsigned short* src, const long long* off, unsigned short* dst,
                                           long long inner, long long total)
{
    gather_rows(src, off, dst, inner, total);
}
extern "C" __global__ void gather_rows_u32(const unsigned int* src, const long long* off, unsigned int* dst,
                                           long long inner, long long total)
{
    gather_rows(src, off, dst, inner, total);
}
extern "C" __global__ void gather_rows_u64(const unsigned long long* src, const long long* off,
                                           unsigned long long* dst, long long inner, long long total)
{
    gather_rows(src, off, dst, inner, total);
}

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

// Range of a length known only at run time (a dynamic engine's arange(sequence)): dst[i] = start + i * delta,
// computed in 64-bit two's complement (unsigned, so that wrapping is defined) and stored in the output's width.
template <typename T>
__device__ __forceinline__ void range_fill(T* __restrict__ dst, long long start, long long delta, long long total)
{
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        dst[i] = (T)(long long)((unsigned long long)start + (unsigned long long)i * (unsigned long long)delta);
    }
}

extern "C" __global__ void range_i16(short* dst, long long start, long long delta, long long total)
{
    range_fill(dst, start, delta, total);
}
extern "C" __global__ void range_i32(int* dst, long long start, long long delta, long long total)
{
    range_fill(dst, start, delta, total);
}
extern "C" __global__ void range_i64(long long* dst, long long start, long long delta, long long total)
{
    range_fill(dst, start, delta, total);
}

// GatherElements with indices read at run time: dst has the indices' shape meta[0:rank] (contiguous); output
// coordinate c reads the data element at sum_d c_d * meta[MAX_RANK + d] (the data's strides, in elements), the
// coordinate along `axis` replaced by the index there (negative ones counting from the end). An index outside
// [-axis_len, axis_len) has nothing to read: the element is written as zero (the reference tactic refuses it).
template <typename T, typename I>
__device__ __forceinline__ void gather_elements(
    const T* __restrict__ src, const I* __restrict__ idx, T* __restrict__ dst, const long long* __restrict__ meta,
    int rank, int axis, long long axis_len, long long total)
{
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        long long k = (long long)idx[i];
        if (k < 0) k += axis_len;
        long long t = i, off = 0;
        for (int d = rank - 1; d >= 0; --d) {
            const long long q = t % meta[d];
            t /= meta[d];
            off += (d == axis ? k : q) * meta[MAX_RANK + d];
        }
        dst[i] = (k >= 0 && k < axis_len) ? src[off] : (T)0;
    }
}

extern "C" __global__ void gather_elements_u8_i32(const unsigned char* src, const int* idx, unsigned char* dst, const long long* meta,
    int rank, int axis, long long axis_len, long long total)
{
    gather_elements(src, idx, dst, meta, rank, axis, axis_len, total);
}
extern "C" __global__ void gather_elements_u8_i64(const unsigned char* src, const long long* idx, unsigned char* dst, const long long* meta,
    int rank, int axis, long long axis_len, long long total)
{
    gather_elements(src, idx, dst, meta, rank, axis, axis_len, total);
}
extern "C" __global__ void gather_elements_u16_i32(const unsigned short* src, const int* idx, unsigned short* dst, const long long* meta,
    int rank, int axis, long long axis_len, long long total)
{
    gather_elements(src, idx, dst, meta, rank, axis, axis_len, total);
}
extern "C" __global__ void gather_elements_u16_i64(const unsigned short* src, const long long* idx, unsigned short* dst, const long long* meta,
    int rank, int axis, long long axis_len, long long total)
{
    gather_elements(src, idx, dst, meta, rank, axis, axis_len, total);
}
extern "C" __global__ void gather_elements_u32_i32(const unsigned int* src, const int* idx, unsigned int* dst, const long long* meta,
    int rank, int axis, long long axis_len, long long total)
{
    gather_elements(src, idx, dst, meta, rank, axis, axis_len, total);
}
extern "C" __global__ void gather_elements_u32_i64(const unsigned int* src, const long long* idx, unsigned int* dst, const long long* meta,
    int rank, int axis, long long axis_len, long long total)
{
    gather_elements(src, idx, dst, meta, rank, axis, axis_len, total);
}
extern "C" __global__ void gather_elements_u64_i32(const unsigned long long* src, const int* idx, unsigned long long* dst, const long long* meta,
    int rank, int axis, long long axis_len, long long total)
{
    gather_elements(src, idx, dst, meta, rank, axis, axis_len, total);
}
extern "C" __global__ void gather_elements_u64_i64(const unsigned long long* src, const long long* idx, unsigned long long* dst, const long long* meta,
    int rank, int axis, long long axis_len, long long total)
{
    gather_elements(src, idx, dst, meta, rank, axis, axis_len, total);
}

// GatherND with indices read at run time (int64, as ONNX has them): dst is rows * inner elements, rows = batch *
// per_batch index tuples of k entries each; row r = (b, j) copies `inner` elements from element offset
// b * batch_stride + sum_e idx[r][e] * meta[k + e] (the data's strides of the k indexed axes; meta[e] their sizes,
// an index counting from the end when negative). A tuple with an entry outside its axis reads nothing: the row is
// written as zeros (the reference tactic refuses it).
template <typename T>
__device__ __forceinline__ void gather_nd_rt(
    const T* __restrict__ src, const long long* __restrict__ idx, T* __restrict__ dst,
    const long long* __restrict__ meta, int k, long long per_batch, long long batch_stride, long long inner,
    long long total)
{
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const long long r = i / inner, w = i - r * inner;
        long long off = (r / per_batch) * batch_stride;
        bool inside = true;
        for (int e = 0; e < k; ++e) {
            long long q = idx[r * k + e];
            if (q < 0) q += meta[e];
            inside = inside && q >= 0 && q < meta[e];
            off += q * meta[k + e];
        }
        dst[i] = inside ? src[off + w] : (T)0;
    }
}

extern "C" __global__ void gather_nd_rt_u8(const unsigned char* src, const long long* idx, unsigned char* dst, const long long* meta,
    int k, long long per_batch, long long batch_stride, long long inner, long long total)
{
    gather_nd_rt(src, idx, dst, meta, k, per_batch, batch_stride, inner, total);
}
extern "C" __global__ void gather_nd_rt_u16(const unsigned short* src, const long long* idx, unsigned short* dst, const long long* meta,
    int k, long long per_batch, long long batch_stride, long long inner, long long total)
{
    gather_nd_rt(src, idx, dst, meta, k, per_batch, batch_stride, inner, total);
}
extern "C" __global__ void gather_nd_rt_u32(const unsigned int* src, const long long* idx, unsigned int* dst, const long long* meta,
    int k, long long per_batch, long long batch_stride, long long inner, long long total)
{
    gather_nd_rt(src, idx, dst, meta, k, per_batch, batch_stride, inner, total);
}
extern "C" __global__ void gather_nd_rt_u64(const unsigned long long* src, const long long* idx, unsigned long long* dst, const long long* meta,
    int k, long long per_batch, long long batch_stride, long long inner, long long total)
{
    gather_nd_rt(src, idx, dst, meta, k, per_batch, batch_stride, inner, total);
}

// Inference BatchNormalization for batchnorm.py: y = x * s[c] + t[c] over a contiguous (N, C, plane) tensor.
// The product and the sum are rounded separately (no FMA), as the CPU tactic rounds them. x may be out.
extern "C" __global__ void channel_affine(
    const float* x, float* out, const float* __restrict__ s, const float* __restrict__ t,
    int c, long long plane, long long total)
{
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const int ch = (int)((i / plane) % c);
        out[i] = __fadd_rn(__fmul_rn(x[i], s[ch]), t[ch]);
    }
}

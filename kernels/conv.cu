// 2-D convolution kernels for conv.py: im2col (for the GEMM tactics), a direct convolution, and the epilogue
// (bias, residual, activation).
// Every output element is written by one thread with a fixed operation order; there are no atomics.
// Tensors are NCHW and contiguous; the weight is (M, Cg, KH, KW). Zero padding is done by bounds checks.
// Written on dtype.cuh's elem_t: built for float32 and for float16 tensors (float arithmetic in both; the bias is
// float, the same values as the layer's bias).
#include "dtype.cuh"

// cols[n][c][i][j][oy][ox] = x[n][c][oy*sh - pt + i*dh][ox*sw - pl + j*dw], or 0 outside the input. For group g the
// rows (c, i, j) with c in [g*Cg, (g+1)*Cg) are the K = Cg*KH*KW rows that weight rows g*Mg.. multiply, in the
// order of the weight's (Cg, KH, KW) layout. total = images * C * KH * KW * OH * OW.
extern "C" __global__ void im2col(
    const elem_t* __restrict__ x, elem_t* __restrict__ cols,
    int h, int w, int kh, int kw, int oh, int ow,
    int pt, int pl, int sh, int sw, int dh, int dw, long long total)
{
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
        long long t = idx;
        const int ox = (int)(t % ow); t /= ow;
        const int oy = (int)(t % oh); t /= oh;
        const int j = (int)(t % kw); t /= kw;
        const int i = (int)(t % kh); t /= kh;  // t is now the input plane n*C + c
        const int iy = oy * sh - pt + i * dh;
        const int ix = ox * sw - pl + j * dw;
        elem_t v = to_elem(0.f);
        if (iy >= 0 && iy < h && ix >= 0 && ix < w) v = x[(t * h + iy) * w + ix];
        cols[idx] = v;
    }
}

// One thread per output element (n, oc, oy, ox): the sum over (ci, i, j) in that order, in float, then the
// bias. total = N * M * OH * OW.
extern "C" __global__ void conv_direct(
    const elem_t* __restrict__ x, const elem_t* __restrict__ wt, const float* __restrict__ bias,
    elem_t* __restrict__ out,
    int c, int h, int w, int m, int cg, int mg, int kh, int kw, int oh, int ow,
    int pt, int pl, int sh, int sw, int dh, int dw, int has_bias, long long total)
{
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
        long long t = idx;
        const int ox = (int)(t % ow); t /= ow;
        const int oy = (int)(t % oh); t /= oh;
        const int oc = (int)(t % m);
        const long long img = t / m;
        const int g = oc / mg;
        const elem_t* xg = x + (img * c + (long long)g * cg) * h * w;
        const elem_t* wo = wt + (long long)oc * cg * kh * kw;
        const int y0 = oy * sh - pt;
        const int x0 = ox * sw - pl;
        float acc = 0.f;
        for (int ci = 0; ci < cg; ++ci) {
            const elem_t* xc = xg + (long long)ci * h * w;
            const elem_t* wc = wo + ci * kh * kw;
            for (int i = 0; i < kh; ++i) {
                const int iy = y0 + i * dh;
                if (iy < 0 || iy >= h) continue;
                for (int j = 0; j < kw; ++j) {
                    const int ix = x0 + j * dw;
                    if (ix < 0 || ix >= w) continue;
                    acc += ld(xc[(long long)iy * w + ix]) * ld(wc[i * kw + j]);
                }
            }
        }
        if (has_bias) acc = __fadd_rn(acc, bias[oc]);
        out[idx] = to_elem(acc);
    }
}

// The epilogue after a convolution's product, over a contiguous (N, M, plane) output; total = N * M * plane:
// v = out + bias[oc] (if bias), v = v + residual (if residual), then the activation, each rounded on its own
// (to float16 too, in a half build) as the unfused Conv, Add and activation layers round them. act: 0 none,
// 1 Relu, 2 Clip(lo, hi), 3 Sigmoid, 4 SiLU (v * sigmoid(v)). NaN passes through Relu and Clip, as NumPy's
// maximum and clip pass it.
extern "C" __global__ void conv_epilogue(
    elem_t* out, const float* __restrict__ bias, const elem_t* residual, int m, long long plane,
    long long total, int act, float lo, float hi)
{
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
        float v = ld(out[idx]);
        if (bias) v = rnd(__fadd_rn(v, bias[(idx / plane) % m]));
        if (residual) v = rnd(__fadd_rn(v, ld(residual[idx])));
        if (act == 1) {
            v = v != v ? v : (v > 0.f ? v : 0.f);
        } else if (act == 2) {
            v = v != v ? v : (v < lo ? lo : (v > hi ? hi : v));
        } else if (act == 3 || act == 4) {  // the reference's overflow-free form of 1 / (1 + e^-v)
            const float e = expf(-fabsf(v));
            const float s = v >= 0.f ? __fdiv_rn(1.f, __fadd_rn(1.f, e)) : __fdiv_rn(e, __fadd_rn(1.f, e));
            v = act == 3 ? s : __fmul_rn(v, rnd(s));
        }
        out[idx] = to_elem(v);
    }
}

// 2-D convolution kernels for conv.py: im2col (for the GEMM tactics), a direct convolution, and the epilogue
// (bias, residual, activation).
// Every output element is written by one thread with a fixed operation order; there are no atomics.
// Tensors are NCHW and contiguous; the weight is (M, Cg, KH, KW). Zero padding is done by bounds checks.
// Written on dtype.cuh's elem_t: built for float32, float16 and bfloat16 tensors (float arithmetic in all; the bias
// is float, the same values as the layer's bias).
#include "dtype.cuh"
#include "epilogue.cuh"

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
// v = out + bias[oc] (if bias), rounded on its own (to float16 or bfloat16 too, in such a build) as the stored
// output of the unfused Conv would be, then epilogue.cuh's residual and activation.
extern "C" __global__ void conv_epilogue(
    elem_t* out, const float* __restrict__ bias, const elem_t* residual, int m, long long plane,
    long long total, int act, float lo, float hi)
{
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
        float v = ld(out[idx]);
        if (bias) v = rnd(__fadd_rn(v, bias[(idx / plane) % m]));
        out[idx] = to_elem(residual_activation(v, residual, idx, act, lo, hi));
    }
}

// Winograd F(2x2, 3x3) for 3x3 convolutions with stride 1 and dilation 1 (conv.py's cuda_winograd tactics):
// each 2x2 block of outputs is A^T [(G g G^T) .* (B^T d B)] A over the 4x4 input patch d, the 16 products
// (.*) summed over input channels as 16 GEMMs (cuBLAS) between the transformed weight U (16, M, C), made on the
// host, and the transformed input V (16, C, P), P = images * TH * TW tiles, TH = ceil(OH / 2), TW = ceil(OW / 2).
// Each tile's transform is a fixed sequence of float additions; there are no atomics.
//   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], A^T = [1 1 1 0; 0 1 -1 -1]

// V[xi][c][p] = (B^T d B)[xi] for every (image, channel, tile); total = images * C * TH * TW.
extern "C" __global__ void winograd_input(
    const elem_t* __restrict__ x, float* __restrict__ v, int c, int h, int w, int th, int tw, int pt, int pl,
    long long tiles, long long total)
{
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
        long long t = idx;
        const int tx = (int)(t % tw); t /= tw;
        const int ty = (int)(t % th); t /= th;
        const int ch = (int)(t % c);
        const long long img = t / c;
        const elem_t* plane = x + (img * c + ch) * h * w;
        const int y0 = 2 * ty - pt, x0 = 2 * tx - pl;
        float d[4][4];
        for (int i = 0; i < 4; ++i) {
            const int iy = y0 + i;
            for (int j = 0; j < 4; ++j) {
                const int ix = x0 + j;
                d[i][j] = (iy >= 0 && iy < h && ix >= 0 && ix < w) ? ld(plane[(long long)iy * w + ix]) : 0.f;
            }
        }
        float b[4][4];  // B^T d
        for (int j = 0; j < 4; ++j) {
            b[0][j] = __fsub_rn(d[0][j], d[2][j]);
            b[1][j] = __fadd_rn(d[1][j], d[2][j]);
            b[2][j] = __fsub_rn(d[2][j], d[1][j]);
            b[3][j] = __fsub_rn(d[1][j], d[3][j]);
        }
        const long long p = (img * th + ty) * tw + tx;
        const long long plane_size = (long long)c * tiles;
        float* out = v + (long long)ch * tiles + p;
        for (int i = 0; i < 4; ++i) {  // (B^T d) B
            out[(4 * i + 0) * plane_size] = __fsub_rn(b[i][0], b[i][2]);
            out[(4 * i + 1) * plane_size] = __fadd_rn(b[i][1], b[i][2]);
            out[(4 * i + 2) * plane_size] = __fsub_rn(b[i][2], b[i][1]);
            out[(4 * i + 3) * plane_size] = __fsub_rn(b[i][1], b[i][3]);
        }
    }
}

// out = A^T Mxi A for every (image, output channel, tile), + bias, then epilogue.cuh's residual and activation;
// mprod is (16, M, P) and out (images, M, OH, OW). total = images * M * TH * TW.
extern "C" __global__ void winograd_output(
    const float* __restrict__ mprod, const float* __restrict__ bias, const elem_t* residual, elem_t* out, int m,
    int oh, int ow, int th, int tw, long long tiles, long long total, int act, float lo, float hi)
{
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += step) {
        long long t = idx;
        const int tx = (int)(t % tw); t /= tw;
        const int ty = (int)(t % th); t /= th;
        const int oc = (int)(t % m);
        const long long img = t / m;
        const long long p = (img * th + ty) * tw + tx;
        const long long plane_size = (long long)m * tiles;
        const float* in = mprod + (long long)oc * tiles + p;
        float s[4][4];
        for (int k = 0; k < 16; ++k) s[k / 4][k % 4] = in[k * plane_size];
        float a[2][4];  // A^T s
        for (int j = 0; j < 4; ++j) {
            a[0][j] = __fadd_rn(__fadd_rn(s[0][j], s[1][j]), s[2][j]);
            a[1][j] = __fsub_rn(__fsub_rn(s[1][j], s[2][j]), s[3][j]);
        }
        const float b = bias ? bias[oc] : 0.f;
        for (int i = 0; i < 2; ++i) {
            const int oy = 2 * ty + i;
            if (oy >= oh) break;
            const float y[2] = {__fadd_rn(__fadd_rn(a[i][0], a[i][1]), a[i][2]),
                                __fsub_rn(__fsub_rn(a[i][1], a[i][2]), a[i][3])};
            for (int j = 0; j < 2; ++j) {
                const int ox = 2 * tx + j;
                if (ox >= ow) break;
                const long long o = ((img * m + oc) * oh + oy) * ow + ox;
                const float vb = bias ? rnd(__fadd_rn(y[j], b)) : rnd(y[j]);
                out[o] = to_elem(residual_activation(vb, residual, o, act, lo, hi));
            }
        }
    }
}

// Resolution changes of the U-Net and their backwards; twins of
// src/cpu/resample.rs.
//
//   resample_up2x   y[i, 2a+dy, 2b+dx, ch] = scale * x[i, a, b, ch]
//                   (nearest 2x upsampling with scale 1; the backward of
//                   2x2 average pooling with scale 0.25)
//   resample_sum2x2 y[i, a, b, ch] = scale * (x[2a, 2b] + x[2a, 2b+1]
//                   + x[2a+1, 2b] + x[2a+1, 2b+1]) summed in that order, as
//                   the CPU does (2x2 average pooling with scale 0.25; the
//                   backward of upsampling with scale 1). Even input sides.
//
// Layout: NHWC. Launch: 256-thread blocks on a grid (ceil(w*c / 256), rows):
// blockIdx.y walks the rows (image, row) of the smaller tensor (grid-stride,
// so more than 65535 rows work), blockIdx.x * 256 + threadIdx.x is the
// element within that row (w*c of them), so one division per element gives
// the pixel and channel and a warp touches consecutive addresses.
//
// Numbers: memory-bound; not yet measured on a GPU.
#include "common.cuh"

// x [rows = n*h, w, c] -> y [n, 2h, 2w, c].
template <typename T> __device__ void resample_up2x_impl(const T* x, T* y, int rows, int w, int c, float scale) {
    const long row_len = (long)w * c;
    const long e = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (e >= row_len) return;
    const long ix = e / c, ch = e - ix * c;
    for (long r = blockIdx.y; r < rows; r += gridDim.y) {
        float v = scale * ld(x, r * row_len + e);
        // Output row 2r of width 2w (image i row a maps to row 2(i*h + a)).
        long o = 2 * r * 2 * row_len + 2 * ix * c + ch;
        st(y, o, v);
        st(y, o + c, v);
        st(y, o + 2 * row_len, v);
        st(y, o + 2 * row_len + c, v);
    }
}
#define UP2X_PARAMS(T) (const T* x, T* y, int rows, int w, int c, float scale)
EXPORT_F32_BF16(resample_up2x, UP2X_PARAMS, (x, y, rows, w, c, scale))

// x [n, 2*ho, 2*wo, c] -> y [rows = n*ho, wo, c].
template <typename T> __device__ void resample_sum2x2_impl(const T* x, T* y, int rows, int wo, int c, float scale) {
    const long row_len = (long)wo * c;
    const long e = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (e >= row_len) return;
    const long ox = e / c, ch = e - ox * c;
    for (long r = blockIdx.y; r < rows; r += gridDim.y) {
        // Input rows 2r and 2r+1, each 2*row_len long.
        long top = 2 * r * 2 * row_len + 2 * ox * c + ch;
        long bottom = top + 2 * row_len;
        float s = ld(x, top) + ld(x, top + c) + ld(x, bottom) + ld(x, bottom + c);
        st(y, r * row_len + e, scale * s);
    }
}
#define SUM2X2_PARAMS(T) (const T* x, T* y, int rows, int wo, int c, float scale)
EXPORT_F32_BF16(resample_sum2x2, SUM2X2_PARAMS, (x, y, rows, wo, c, scale))

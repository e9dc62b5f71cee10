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

// The grid walk both kernels share (see Launch above): for each row r of the
// smaller tensor [rows, w, c] that this thread visits, f(small, top, bottom)
// with small = the index of this thread's element there, and top, bottom =
// the indices in the larger tensor [2*rows, 2w, c] of the first of the 2x2
// elements it maps to, in rows 2r and 2r+1 (the others: top + c, bottom + c).
template <typename F> __device__ __forceinline__ void for_each_2x2(int rows, int w, int c, F f) {
    const long row_len = (long)w * c;
    const long e = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (e >= row_len) return;
    const long px = e / c, ch = e - px * c;
    for (long r = blockIdx.y; r < rows; r += gridDim.y) {
        // Larger rows 2r and 2r+1, each 2*row_len long (image i row a of the
        // smaller tensor maps to rows 2(i*h + a) and 2(i*h + a) + 1).
        const long top = 2 * r * 2 * row_len + 2 * px * c + ch;
        f(r * row_len + e, top, top + 2 * row_len);
    }
}

// x [rows = n*h, w, c] -> y [n, 2h, 2w, c].
template <typename T> __device__ void resample_up2x_impl(const T* x, T* y, int rows, int w, int c, float scale) {
    for_each_2x2(rows, w, c, [&](long small, long top, long bottom) {
        float v = scale * ld(x, small);
        st(y, top, v);
        st(y, top + c, v);
        st(y, bottom, v);
        st(y, bottom + c, v);
    });
}
#define UP2X_PARAMS(T) (const T* x, T* y, int rows, int w, int c, float scale)
EXPORT_F32_BF16(resample_up2x, UP2X_PARAMS, (x, y, rows, w, c, scale))

// x [n, 2*ho, 2*wo, c] -> y [rows = n*ho, wo, c].
template <typename T> __device__ void resample_sum2x2_impl(const T* x, T* y, int rows, int wo, int c, float scale) {
    for_each_2x2(rows, wo, c, [&](long small, long top, long bottom) {
        float s = ld(x, top) + ld(x, top + c) + ld(x, bottom) + ld(x, bottom + c);
        st(y, small, scale * s);
    });
}
#define SUM2X2_PARAMS(T) (const T* x, T* y, int rows, int wo, int c, float scale)
EXPORT_F32_BF16(resample_sum2x2, SUM2X2_PARAMS, (x, y, rows, wo, c, scale))

// Element-wise kernels: the tensor plumbing (fill, cast, axpy) and the
// U-Net's element-wise ops, twins of src/cpu/elementwise.rs (silu, add,
// scale_shift, concat), src/cpu/embed.rs (timestep embedding) and
// cpu::sum_rows (the bias gradient). All math in f32 (the embedding's
// frequencies and angles in f64, as the CPU computes them).
//
// Layout: flat arrays; NHWC tensors [n, h, w, c] with the channel fastest.
// scale_shift's per-image vector ss is [n, 2c] (scale then shift) or [n, c]
// (shift only); concat joins [n, h, w, ca] and [n, h, w, cb] along channels;
// the embedding maps t [n] (f32 whatever the output type) to [n, dim] with
// cos in the first half and sin in the second.
//
// Launch shapes:
// - the plain element-wise ops: 1-D grid of 256-thread blocks, one element
//   per thread in a grid-stride loop (so a capped grid covers any n);
// - the column reductions (sum_rows, scale_shift_backward's dss): two
//   passes, deterministic (a fixed partition, no atomics). Pass 1 has
//   blocks of bx x by = 256 threads (bx = min(32, c rounded up to a power of
//   two) columns, by row lanes), grid (ceil(c / bx), chunks[, images]); each
//   block sums `rows_per_chunk` rows of its columns, folds its row lanes
//   with a shared-memory tree and writes one f32 partial per column. Pass 2
//   (sum_partials) folds the chunks the same way, one block per bx columns;
// - timestep_embedding: grid-stride over n x dim/2 (each thread writes a
//   cos and a sin); its backward: one 128-thread block per row, block_sum.
//
// Numbers: memory-bound; not yet measured on a GPU.
#include "common.cuh"

// Every thread of a grid-stride loop over [0, n).
#define FOR_EACH(i, n) \
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < (n); i += (long)gridDim.x * blockDim.x)

// Threads of a reduction block (bx * by, see the note above).
#define REDUCE_THREADS 256

template <typename T> __device__ void fill_impl(T* y, long n, float value) {
    FOR_EACH(i, n) st(y, i, value);
}
#define FILL_PARAMS(T) (T* y, long n, float value)
EXPORT_F32_BF16(fill, FILL_PARAMS, (y, n, value))

// y += alpha * x
template <typename T> __device__ void axpy_impl(T* y, const T* x, long n, float alpha) {
    FOR_EACH(i, n) st(y, i, ld(y, i) + alpha * ld(x, i));
}
#define AXPY_PARAMS(T) (T* y, const T* x, long n, float alpha)
EXPORT_F32_BF16(axpy, AXPY_PARAMS, (y, x, n, alpha))

// Casts between the two storage types (round to nearest even into bf16).
extern "C" __global__ void cast_f32_to_bf16(const float* x, bf16* y, long n) {
    FOR_EACH(i, n) y[i] = __float2bfloat16(x[i]);
}
extern "C" __global__ void cast_bf16_to_f32(const bf16* x, float* y, long n) {
    FOR_EACH(i, n) y[i] = __bfloat162float(x[i]);
}

// ---- SiLU, add ----------------------------------------------------------

template <typename T> __device__ void silu_impl(const T* x, T* y, long n) {
    FOR_EACH(i, n) st(y, i, silu_f(ld(x, i)));
}
#define SILU_PARAMS(T) (const T* x, T* y, long n)
EXPORT_F32_BF16(silu, SILU_PARAMS, (x, y, n))

// dx = dy * s * (1 + x (1 - s)), s = sigmoid(x).
template <typename T> __device__ void silu_backward_impl(const T* x, const T* dy, T* dx, long n) {
    FOR_EACH(i, n) {
        float v = ld(x, i);
        float s = 1.0f / (1.0f + __expf(-v));
        st(dx, i, ld(dy, i) * s * (1.0f + v * (1.0f - s)));
    }
}
#define SILU_BACKWARD_PARAMS(T) (const T* x, const T* dy, T* dx, long n)
EXPORT_F32_BF16(silu_backward, SILU_BACKWARD_PARAMS, (x, dy, dx, n))

template <typename T> __device__ void add_impl(const T* a, const T* b, T* y, long n) {
    FOR_EACH(i, n) st(y, i, ld(a, i) + ld(b, i));
}
#define ADD_PARAMS(T) (const T* a, const T* b, T* y, long n)
EXPORT_F32_BF16(add, ADD_PARAMS, (a, b, y, n))

// ---- scale_shift ----------------------------------------------------------

// y = x * (1 + scale[img, ch]) + shift[img, ch] (has_scale: ss is [n, 2c]),
// or y = x + shift[img, ch] (ss is [n, c]). `image` = h * w * c.
template <typename T>
__device__ void scale_shift_impl(const T* x, const T* ss, T* y, long n, int c, long image, int has_scale) {
    const long width = has_scale ? 2L * c : (long)c;
    FOR_EACH(i, n) {
        long img = i / image;
        int ch = (int)(i % c);
        const T* s = ss + img * width;
        float gain = has_scale ? 1.0f + ld(s, ch) : 1.0f;
        float shift = ld(s, has_scale ? c + ch : ch);
        st(y, i, ld(x, i) * gain + shift);
    }
}
#define SCALE_SHIFT_PARAMS(T) (const T* x, const T* ss, T* y, long n, int c, long image, int has_scale)
EXPORT_F32_BF16(scale_shift, SCALE_SHIFT_PARAMS, (x, ss, y, n, c, image, has_scale))

// Folds the row lanes (threadIdx.y) of a reduction block: acc holds
// blockDim.x * blockDim.y values, blockDim.y a power of two; afterwards row
// lane 0 holds the sums. Every thread of the block must call it.
__device__ __forceinline__ void fold_rows(float* acc) {
    const int t = threadIdx.y * blockDim.x + threadIdx.x;
    for (int h = blockDim.y >> 1; h > 0; h >>= 1) {
        __syncthreads();
        if ((int)threadIdx.y < h) acc[t] += acc[t + h * blockDim.x];
    }
    __syncthreads();
}

// Pass 1 of the backward: dx = dy * (1 + scale), and per (chunk, image,
// channel) partial sums of dy * x (d scale) and dy (d shift), written to
// partial [chunks, n * width] at the place the channel has in ss, so that
// sum_partials over the chunks gives dss directly.
// Grid (ceil(c / bx), chunks, n); block (bx, by), bx * by <= 256.
template <typename T>
__device__ void scale_shift_backward_impl(const T* x, const T* ss, const T* dy, T* dx, float* partial, int c,
                                          long pixels, long rows_per_chunk, int has_scale) {
    __shared__ float acc_x[REDUCE_THREADS];
    __shared__ float acc_1[REDUCE_THREADS];
    const int ch = blockIdx.x * blockDim.x + threadIdx.x;
    const long img = blockIdx.z;
    const long width = has_scale ? 2L * c : (long)c;
    const long p0 = blockIdx.y * rows_per_chunk;
    const long p1 = min(pixels, p0 + rows_per_chunk);
    float sx = 0.0f, s1 = 0.0f;
    if (ch < c) {
        const float gain = has_scale ? 1.0f + ld(ss, img * width + ch) : 1.0f;
        const long base = img * pixels * c + ch;
        for (long p = p0 + threadIdx.y; p < p1; p += blockDim.y) {
            const long i = base + p * c;
            const float g = ld(dy, i);
            st(dx, i, g * gain);
            s1 += g;
            if (has_scale) sx += g * ld(x, i);
        }
    }
    const int t = threadIdx.y * blockDim.x + threadIdx.x;
    acc_x[t] = sx;
    acc_1[t] = s1;
    // fold_rows on both arrays in one pass of barriers.
    for (int h = blockDim.y >> 1; h > 0; h >>= 1) {
        __syncthreads();
        if ((int)threadIdx.y < h) {
            acc_x[t] += acc_x[t + h * blockDim.x];
            acc_1[t] += acc_1[t + h * blockDim.x];
        }
    }
    if (threadIdx.y == 0 && ch < c) {
        float* out = partial + blockIdx.y * (long)gridDim.z * width + img * width;
        if (has_scale) {
            out[ch] = acc_x[threadIdx.x];
            out[c + ch] = acc_1[threadIdx.x];
        } else {
            out[ch] = acc_1[threadIdx.x];
        }
    }
}
#define SCALE_SHIFT_BACKWARD_PARAMS(T)                                                                \
    (const T* x, const T* ss, const T* dy, T* dx, float* partial, int c, long pixels, long rows_per_chunk, \
     int has_scale)
EXPORT_F32_BF16(scale_shift_backward, SCALE_SHIFT_BACKWARD_PARAMS,
                (x, ss, dy, dx, partial, c, pixels, rows_per_chunk, has_scale))

// ---- column sums ------------------------------------------------------------

// Pass 1 of sum_rows: partial[chunk, col] = sum of x[r, col] over the chunk's
// rows. Grid (ceil(c / bx), chunks); block (bx, by), bx * by <= 256.
template <typename T>
__device__ void sum_rows_partial_impl(const T* x, float* partial, long rows, int c, long rows_per_chunk) {
    __shared__ float acc[REDUCE_THREADS];
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    const long r0 = blockIdx.y * rows_per_chunk;
    const long r1 = min(rows, r0 + rows_per_chunk);
    float s = 0.0f;
    if (col < c)
        for (long r = r0 + threadIdx.y; r < r1; r += blockDim.y) s += ld(x, r * c + col);
    acc[threadIdx.y * blockDim.x + threadIdx.x] = s;
    fold_rows(acc);
    if (threadIdx.y == 0 && col < c) partial[blockIdx.y * (long)c + col] = acc[threadIdx.x];
}
#define SUM_ROWS_PARTIAL_PARAMS(T) (const T* x, float* partial, long rows, int c, long rows_per_chunk)
EXPORT_F32_BF16(sum_rows_partial, SUM_ROWS_PARTIAL_PARAMS, (x, partial, rows, c, rows_per_chunk))

// Pass 2: y[col] = sum over chunks of partial[chunk, col], stored as T.
// Grid (ceil(c / bx)); block (bx, by), bx * by <= 256. Each row lane sums
// the chunks k = lane, lane + by, ... in order, then the lanes are folded.
template <typename T> __device__ void sum_partials_impl(const float* partial, T* y, int chunks, int c) {
    __shared__ float acc[REDUCE_THREADS];
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    float s = 0.0f;
    if (col < c)
        for (int k = threadIdx.y; k < chunks; k += blockDim.y) s += partial[(long)k * c + col];
    acc[threadIdx.y * blockDim.x + threadIdx.x] = s;
    fold_rows(acc);
    if (threadIdx.y == 0 && col < c) st(y, col, acc[threadIdx.x]);
}
#define SUM_PARTIALS_PARAMS(T) (const float* partial, T* y, int chunks, int c)
EXPORT_F32_BF16(sum_partials, SUM_PARTIALS_PARAMS, (partial, y, chunks, c))

// ---- concat ---------------------------------------------------------------

// y [px, ca + cb] = a [px, ca] ++ b [px, cb]; n = px * (ca + cb).
template <typename T> __device__ void concat_impl(const T* a, const T* b, T* y, long n, int ca, int cb) {
    const int c = ca + cb;
    FOR_EACH(i, n) {
        long px = i / c;
        int ch = (int)(i - px * c);
        y[i] = ch < ca ? a[px * ca + ch] : b[px * cb + (ch - ca)];
    }
}
#define CONCAT_PARAMS(T) (const T* a, const T* b, T* y, long n, int ca, int cb)
EXPORT_F32_BF16(concat, CONCAT_PARAMS, (a, b, y, n, ca, cb))

// The inverse split: da [px, ca], db [px, cb] from dy [px, ca + cb].
template <typename T> __device__ void concat_backward_impl(const T* dy, T* da, T* db, long n, int ca, int cb) {
    const int c = ca + cb;
    FOR_EACH(i, n) {
        long px = i / c;
        int ch = (int)(i - px * c);
        if (ch < ca)
            da[px * ca + ch] = dy[i];
        else
            db[px * cb + (ch - ca)] = dy[i];
    }
}
#define CONCAT_BACKWARD_PARAMS(T) (const T* dy, T* da, T* db, long n, int ca, int cb)
EXPORT_F32_BF16(concat_backward, CONCAT_BACKWARD_PARAMS, (dy, da, db, n, ca, cb))

// ---- timestep embedding -------------------------------------------------------

// Frequency k of a half-width `half`: exp(-ln(10000) k / half), in f64 and
// in the CPU's order of operations.
__device__ __forceinline__ double embed_frequency(int k, int half) {
    return exp(-log(10000.0) * (double)k / (double)half);
}

// y[row, k] = cos(t f_k), y[row, half + k] = sin(t f_k). t is f32 [n].
template <typename T> __device__ void timestep_embedding_impl(const float* t, T* y, int n, int half) {
    FOR_EACH(i, (long)n * half) {
        long row = i / half;
        int k = (int)(i - row * half);
        double s, c;
        sincos((double)t[row] * embed_frequency(k, half), &s, &c);
        st(y, row * 2 * half + k, (float)c);
        st(y, row * 2 * half + half + k, (float)s);
    }
}
#define TIMESTEP_EMBEDDING_PARAMS(T) (const float* t, T* y, int n, int half)
EXPORT_F32_BF16(timestep_embedding, TIMESTEP_EMBEDDING_PARAMS, (t, y, n, half))

// dt[row] = sum_k f_k (cos(t f_k) dy[row, half + k] - sin(t f_k) dy[row, k]).
// Grid (n); block of a multiple of 32 threads (128). Terms and each
// thread's sum in f64, the block sum in f32.
template <typename T>
__device__ void timestep_embedding_backward_impl(const float* t, const T* dy, float* dt, int n, int half) {
    __shared__ float scratch[32];
    const long row = blockIdx.x;
    if (row >= n) return;  // uniform over the block
    const T* d = dy + row * 2 * half;
    const double tv = (double)t[row];
    double acc = 0.0;
    for (int k = threadIdx.x; k < half; k += blockDim.x) {
        double f = embed_frequency(k, half), s, c;
        sincos(tv * f, &s, &c);
        acc += f * (c * (double)ld(d, half + k) - s * (double)ld(d, k));
    }
    float total = block_sum((float)acc, scratch);
    if (threadIdx.x == 0) dt[row] = total;
}
#define TIMESTEP_EMBEDDING_BACKWARD_PARAMS(T) (const float* t, const T* dy, float* dt, int n, int half)
EXPORT_F32_BF16(timestep_embedding_backward, TIMESTEP_EMBEDDING_BACKWARD_PARAMS, (t, dy, dt, n, half))

// The optimizer on flat f32 buffers, twin of src/optim.rs: every parameter
// lives end to end in one buffer each for the master weights, AdamW's m and
// v, the EMA weights and the gradients (src/cuda/optim.rs, FlatOptimizer).
//
//   gather_grads        each parameter's gradient (an f32 device tensor in
//                       either mode, found through a pointer table) into the
//                       flat f32 gradient buffer, plus one f64 sum of squares
//                       per chunk;
//   grad_norm_finalize  sums the per-chunk partials in a fixed order into
//                       the global norm (f32, sqrt taken in f64 as
//                       optim::clip_grad_norm does), NaN when the step's loss
//                       (if given) is not finite, and copies that loss
//                       beside it (one read gives the host both);
//   adamw_flat          clip_grad_norm's scaling (k = clip / (norm + 1e-6)
//                       when norm > clip) then AdamW in optim::AdamW's order:
//                       decoupled decay, moments, bias-corrected update;
//   ema_flat            ema = d ema + (1 - d) w (optim::Ema::update);
//   scatter_params      the master weights into each working parameter (T).
//
// adamw_flat and ema_flat read the norm from device memory; when it is not
// finite (a NaN or infinite gradient, or loss) they change nothing, where
// the CPU trainer stops before updating. (Finite gradients whose norm overflows f32,
// above 3.4e38, are skipped too; the CPU would zero them and only decay.)
// The arithmetic mirrors the CPU's f32 expressions with the _rn intrinsics
// (never contracted into FMAs).
//
// Layout: flat f32 buffers; tables of u64 built once by the host:
//   ptrs[t]               device address of tensor t (gradient or parameter);
//   offsets[t]            start of tensor t in the flat buffers, offsets[T] = total;
//   chunks[2c], [2c + 1]  tensor index and start (within it) of chunk c: each
//                         tensor is cut into chunks of `chunk` elements.
// Launch: gather_grads and scatter_params one 256-thread block per chunk
// (grid-stride over chunks when there are more chunks than blocks);
// grad_norm_finalize one block of 256; adamw_flat and ema_flat 1-D grids of
// 256-thread blocks, grid-stride. Reductions assume blockDim.x is a multiple
// of 32. The partial of chunk c does not depend on the grid, so the norm is
// reproducible run to run.
// Numbers: memory-bound, not yet measured on a GPU.
#include "common.cuh"

namespace optim_k {

__device__ __forceinline__ long grid_start() { return blockIdx.x * (long)blockDim.x + threadIdx.x; }
__device__ __forceinline__ long grid_stride() { return (long)gridDim.x * blockDim.x; }

// Where chunk c lies: tensor t, its flat start `base`, and the element range
// [begin, end) within the tensor.
struct Chunk {
    long t, base, begin, end;
};

__device__ __forceinline__ Chunk chunk_at(const unsigned long long* offsets,
                                          const unsigned long long* chunks, long c, long chunk) {
    Chunk k;
    k.t = (long)chunks[2 * c];
    k.begin = (long)chunks[2 * c + 1];
    k.base = (long)offsets[k.t];
    long len = (long)offsets[k.t + 1] - k.base;
    k.end = min(k.begin + chunk, len);
    return k;
}

}  // namespace optim_k

// ---- gather: gradients -> flat f32, with per-chunk sums of squares --------
extern "C" __global__ void gather_grads(const unsigned long long* ptrs, const unsigned long long* offsets,
                                        const unsigned long long* chunks, long nchunks, long chunk, float* flat,
                                        double* partials) {
    using namespace optim_k;
    __shared__ double scratch[32];
    // c depends on blockIdx only, so the whole block takes the same trips.
    for (long c = blockIdx.x; c < nchunks; c += gridDim.x) {
        Chunk k = chunk_at(offsets, chunks, c, chunk);
        const float* src = reinterpret_cast<const float*>(ptrs[k.t]);
        float* dst = flat + k.base;
        double acc = 0.0;
        for (long i = k.begin + threadIdx.x; i < k.end; i += blockDim.x) {
            float g = src[i];
            dst[i] = g;
            acc += (double)g * (double)g;
        }
        acc = block_sum(acc, scratch);
        if (threadIdx.x == 0) partials[c] = acc;
    }
}

// ---- the global norm: one block ---------------------------------------------
// out[0] = the norm (NaN when *loss is not finite), out[1] = *loss (0 when
// loss is null).
extern "C" __global__ void grad_norm_finalize(const double* partials, long count, const float* loss,
                                              float* out) {
    using namespace optim_k;
    __shared__ double scratch[32];
    double acc = 0.0;
    for (long j = threadIdx.x; j < count; j += blockDim.x) acc += partials[j];
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) {
        const float l = loss ? loss[0] : 0.0f;
        out[0] = isfinite(l) ? (float)sqrt(acc) : NAN;
        out[1] = l;
    }
}

// ---- clipping + AdamW over the flat buffer ----------------------------------
// decay = lr * weight_decay, bc1 = 1 - beta1^t, bc2 = 1 - beta2^t (host, f32).
extern "C" __global__ void adamw_flat(float* p, float* m, float* v, const float* g, long n,
                                      const float* norm_ptr, float clip, float lr, float beta1,
                                      float beta2, float eps, float decay, float bc1, float bc2) {
    using namespace optim_k;
    const float norm = norm_ptr[0];
    if (!isfinite(norm)) return;
    const bool clipping = norm > clip;
    const float k = __fdiv_rn(clip, __fadd_rn(norm, 1e-6f));
    const float omb1 = __fsub_rn(1.0f, beta1), omb2 = __fsub_rn(1.0f, beta2);
    for (long i = grid_start(); i < n; i += grid_stride()) {
        float gi = g[i];
        if (clipping) gi = __fmul_rn(gi, k);
        float pi = p[i];
        pi = __fsub_rn(pi, __fmul_rn(decay, pi));
        float mi = __fadd_rn(__fmul_rn(beta1, m[i]), __fmul_rn(omb1, gi));
        float vi = __fadd_rn(__fmul_rn(beta2, v[i]), __fmul_rn(__fmul_rn(omb2, gi), gi));
        float num = __fmul_rn(lr, __fdiv_rn(mi, bc1));
        float den = __fadd_rn(__fsqrt_rn(__fdiv_rn(vi, bc2)), eps);
        p[i] = __fsub_rn(pi, __fdiv_rn(num, den));
        m[i] = mi;
        v[i] = vi;
    }
}

// ---- EMA over the flat buffer -----------------------------------------------
extern "C" __global__ void ema_flat(float* ema, const float* w, long n, float decay,
                                    const float* norm_ptr) {
    using namespace optim_k;
    if (!isfinite(norm_ptr[0])) return;
    const float omd = __fsub_rn(1.0f, decay);
    for (long i = grid_start(); i < n; i += grid_stride())
        ema[i] = __fadd_rn(__fmul_rn(decay, ema[i]), __fmul_rn(omd, w[i]));
}

// ---- scatter: flat f32 master -> working parameters of type T ---------------
template <typename T>
__device__ void scatter_params_impl(const unsigned long long* ptrs, const unsigned long long* offsets,
                                    const unsigned long long* chunks, long nchunks, long chunk,
                                    const float* flat) {
    using namespace optim_k;
    for (long c = blockIdx.x; c < nchunks; c += gridDim.x) {
        Chunk k = chunk_at(offsets, chunks, c, chunk);
        T* dst = reinterpret_cast<T*>(ptrs[k.t]);
        const float* src = flat + k.base;
        for (long i = k.begin + threadIdx.x; i < k.end; i += blockDim.x) st(dst, i, src[i]);
    }
}
#define SCATTER_PARAMS_PARAMS(T)                                                               \
    (const unsigned long long* ptrs, const unsigned long long* offsets,                         \
     const unsigned long long* chunks, long nchunks, long chunk, const float* flat)
EXPORT_F32_BF16(scatter_params, SCATTER_PARAMS_PARAMS, (ptrs, offsets, chunks, nchunks, chunk, flat))

// The bridges' fused element-wise ops and the training loss, twins of
// src/cpu/bridge.rs and src/cpu/loss.rs:
//
//   training_pair   xt = p.x0 x0 + p.e e + p.z z,  target = q.x0 x0 + q.e e + q.z z
//                   with (p, q) per image (6 f32 per image in a device array:
//                   p.x0 p.e p.z q.x0 q.e q.z) and z drawn in-kernel: element i
//                   of the flat batch is philox_normal(seed, stream, i), as
//                   rng::fill_normal draws it on the CPU;
//   posterior_step  next = s.out out + s.x x + s.e e + s.noise z, the seed read
//                   from device memory (one u64) so that a captured graph can be
//                   replayed with another seed; no noise drawn when s.noise == 0;
//   mse_partials + mse_finalize   mean((pred - target)^2), deterministic: one
//                   f64 partial per block, then one block sums them in a fixed
//                   order and writes the f32 mean;
//   mse_backward    dpred = (2 dloss / n) (pred - target), dloss read from a
//                   one-element f32 device tensor.
//
// Arithmetic mirrors the CPU expression by expression with the _rn intrinsics
// (which the compiler never contracts into FMAs), so f32 results match the
// CPU bit for bit given the same inputs and noise (the noise itself can differ
// from the CPU's by an f32 ulp in rare values, see src/rng.rs).
//
// Layout: flat arrays (NHWC tensors as one run of elements); the batch index
// of element i is i / image_len.
// Launch: 1-D grids of 256-thread blocks with grid-stride loops. training_pair
// and posterior_step give each thread a group of 4 consecutive elements (one
// Philox block, two Box-Muller pairs). mse_partials runs on a grid fixed by n
// alone (at most 1024 blocks, so the sum is reproducible), mse_finalize on one
// block of 256 threads. Every reduction assumes blockDim.x is a multiple of 32.
// Numbers: memory-bound (plus f64 Box-Muller), not yet measured on a GPU.
#include "common.cuh"

namespace bridge_k {

// ((a x + b y) + c z), rounded like the CPU's f32 expression.
__device__ __forceinline__ float comb3(float a, float x, float b, float y, float c, float z) {
    return __fadd_rn(__fadd_rn(__fmul_rn(a, x), __fmul_rn(b, y)), __fmul_rn(c, z));
}

__device__ __forceinline__ long grid_start() { return blockIdx.x * (long)blockDim.x + threadIdx.x; }
__device__ __forceinline__ long grid_stride() { return (long)gridDim.x * blockDim.x; }

// The four normals of Philox block `q` (elements 4q .. 4q+3 of the stream).
__device__ __forceinline__ void normals4(uint64_t seed, uint64_t stream, long q, float z[4]) {
    uint4x w = philox_block(seed, stream, (uint64_t)q);
    box_muller(w.v[0], w.v[1], &z[0], &z[1]);
    box_muller(w.v[2], w.v[3], &z[2], &z[3]);
}

}  // namespace bridge_k

// ---- training pair ---------------------------------------------------------
// n = total elements, image = elements per image (>= 1), coeffs = 6 per image.
template <typename T>
__device__ void training_pair_impl(const T* x0, const T* e, const float* coeffs, T* xt, T* target,
                                   long n, long image, unsigned long long seed,
                                   unsigned long long stream) {
    using namespace bridge_k;
    if (image < 1) return;
    long groups = (n + 3) >> 2;
    for (long q = grid_start(); q < groups; q += grid_stride()) {
        float z[4];
        normals4(seed, stream, q, z);
        long i0 = q << 2;
        long b = i0 / image;
        long next_image = (b + 1) * image;  // first element of image b + 1
        const float* c = coeffs + 6 * b;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            long i = i0 + j;
            if (i >= n) break;
            if (i >= next_image) {  // at most one boundary per element since image >= 1
                next_image += image;
                c += 6;
            }
            float a = ld(x0, i), ev = ld(e, i);
            st(xt, i, comb3(c[0], a, c[1], ev, c[2], z[j]));
            st(target, i, comb3(c[3], a, c[4], ev, c[5], z[j]));
        }
    }
}
#define TRAINING_PAIR_PARAMS(T)                                                               \
    (const T* x0, const T* e, const float* coeffs, T* xt, T* target, long n, long image, \
     unsigned long long seed, unsigned long long stream)
EXPORT_F32_BF16(training_pair, TRAINING_PAIR_PARAMS, (x0, e, coeffs, xt, target, n, image, seed, stream))

// ---- posterior step ---------------------------------------------------------
// The seed is read from device memory at run time (graph replays follow it).
template <typename T>
__device__ void posterior_step_impl(const T* out, const T* x, const T* e, T* next, long n, float c_out,
                                    float c_x, float c_e, float c_noise,
                                    const unsigned long long* seed_ptr, unsigned long long stream) {
    using namespace bridge_k;
    const bool noisy = c_noise != 0.0f;
    const uint64_t seed = noisy ? *seed_ptr : 0;
    long groups = (n + 3) >> 2;
    for (long q = grid_start(); q < groups; q += grid_stride()) {
        float z[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        if (noisy) normals4(seed, stream, q, z);
        long i0 = q << 2;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            long i = i0 + j;
            if (i >= n) break;
            // ((out o + x xv) + e ev) + noise z, the CPU's order.
            float r = comb3(c_out, ld(out, i), c_x, ld(x, i), c_e, ld(e, i));
            st(next, i, __fadd_rn(r, __fmul_rn(c_noise, z[j])));
        }
    }
}
#define POSTERIOR_STEP_PARAMS(T)                                                              \
    (const T* out, const T* x, const T* e, T* next, long n, float c_out, float c_x, float c_e, \
     float c_noise, const unsigned long long* seed_ptr, unsigned long long stream)
EXPORT_F32_BF16(posterior_step, POSTERIOR_STEP_PARAMS,
                (out, x, e, next, n, c_out, c_x, c_e, c_noise, seed_ptr, stream))

// ---- MSE ------------------------------------------------------------------
// One f64 partial sum of ((pred - target) as f32)^2 per block.
template <typename T>
__device__ void mse_partials_impl(const T* pred, const T* target, long n, double* partials) {
    using namespace bridge_k;
    __shared__ double scratch[32];
    double acc = 0.0;
    for (long i = grid_start(); i < n; i += grid_stride()) {
        double d = (double)__fsub_rn(ld(pred, i), ld(target, i));
        acc += d * d;
    }
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}
#define MSE_PARTIALS_PARAMS(T) (const T* pred, const T* target, long n, double* partials)
EXPORT_F32_BF16(mse_partials, MSE_PARTIALS_PARAMS, (pred, target, n, partials))

// loss[0] = (f32)(sum of the `count` partials / n). One block.
extern "C" __global__ void mse_finalize(const double* partials, long count, long n, float* loss) {
    using namespace bridge_k;
    __shared__ double scratch[32];
    double acc = 0.0;
    for (long j = threadIdx.x; j < count; j += blockDim.x) acc += partials[j];
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) loss[0] = (float)(acc / (double)n);
}

// dpred = k (pred - target), k = 2 dloss / n in f32 like the CPU.
template <typename T>
__device__ void mse_backward_impl(const T* pred, const T* target, const float* dloss, T* dpred, long n) {
    using namespace bridge_k;
    const float k = __fdiv_rn(__fmul_rn(2.0f, dloss[0]), (float)n);
    for (long i = grid_start(); i < n; i += grid_stride())
        st(dpred, i, __fmul_rn(k, __fsub_rn(ld(pred, i), ld(target, i))));
}
#define MSE_BACKWARD_PARAMS(T) (const T* pred, const T* target, const float* dloss, T* dpred, long n)
EXPORT_F32_BF16(mse_backward, MSE_BACKWARD_PARAMS, (pred, target, dloss, dpred, n))

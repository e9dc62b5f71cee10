// Shared by every kernel file: element types, loads and stores that widen
// to f32, reductions, and the Philox 4x32-10 generator of src/rng.rs (same
// counter/key layout and bits; its Box-Muller normals in double agree with
// the CPU's to an f32 ulp, or 1e-14 near 0: see src/rng.rs).
#pragma once
#include <stdint.h>

// The one seam between the GPU and the emulated device (kernels/host/):
// nvcc gets the CUDA headers and the inline PTX; a host compiler gets the
// emulator's built-ins, which compute the same two operations.
#ifdef __CUDACC__
#include <cuda_bf16.h>

// d += a b for a 16 x 16 (row) by 16 x 8 (column) bf16 product, f32 d.
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// Bytes of dynamic shared memory this launch has.
__device__ __forceinline__ unsigned dynamic_smem_bytes() {
    unsigned r;
    asm volatile("mov.u32 %0, %%dynamic_smem_size;" : "=r"(r));
    return r;
}
#else
#include "host/cuda_host.h"

inline void mma_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    ::emu::mma_m16n8k16_bf16(d, a, b);
}
inline unsigned dynamic_smem_bytes() { return ::emu::dynamic_shared_bytes(); }
#endif

typedef __nv_bfloat16 bf16;

// Every kernel computes in f32 whatever its storage type.
__device__ __forceinline__ float ld(const float* p, long i) { return p[i]; }
__device__ __forceinline__ float ld(const bf16* p, long i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void st(float* p, long i, float v) { p[i] = v; }
__device__ __forceinline__ void st(bf16* p, long i, float v) { p[i] = __float2bfloat16(v); }

// Element `ch` of pixel `pixel` of an NHWC tensor with `channels` channels.
// A pixel index fits an int; an element index need not (adm256 at batch 64
// and 256 x 256 has 2^31 elements in one skip concat), so it is a long.
__device__ __forceinline__ long nhwc(long pixel, int channels, int ch) { return pixel * channels + ch; }

__device__ __forceinline__ float silu_f(float x) { return x / (1.0f + __expf(-x)); }

// Sum over a warp, in a fixed order; every lane gets the result. A is the
// accumulator type (float, or double where a reduction must match the
// CPU's f64 sums).
template <typename A> __device__ __forceinline__ A warp_sum(A v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum over a block of blockDim.x threads (a multiple of 32, at most 1024),
// in a fixed order; every thread gets the result. `scratch` holds 32 A's
// of shared memory.
template <typename A> __device__ __forceinline__ A block_sum(A v, A* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    int warps = (blockDim.x + 31) >> 5;
    v = lane < warps ? scratch[lane] : A(0);
    return warp_sum(v);
}

// ---- Philox 4x32-10 (Salmon et al. 2011), keyed like src/rng.rs ----------
// Element i of stream `stream` under `seed`: counter [i/4 lo, i/4 hi,
// stream lo, stream hi], key [seed lo, seed hi], lane i % 4.
struct uint4x { uint32_t v[4]; };

__device__ __forceinline__ uint4x philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                                 uint32_t k0, uint32_t k1) {
    const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
#pragma unroll
    for (int round = 0; round < 10; ++round) {
        if (round > 0) { k0 += W0; k1 += W1; }
        uint32_t hi0 = __umulhi(M0, c0), lo0 = M0 * c0;
        uint32_t hi1 = __umulhi(M1, c2), lo1 = M1 * c2;
        uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
    }
    uint4x r;
    r.v[0] = c0; r.v[1] = c1; r.v[2] = c2; r.v[3] = c3;
    return r;
}

__device__ __forceinline__ uint4x philox_block(uint64_t seed, uint64_t stream, uint64_t block) {
    return philox4x32_10((uint32_t)block, (uint32_t)(block >> 32), (uint32_t)stream,
                         (uint32_t)(stream >> 32), (uint32_t)seed, (uint32_t)(seed >> 32));
}

// Box-Muller on one lane pair, in double, rounded once to float (as rng.rs,
// which takes cos/sin(2 pi u2) with 2 pi u2 rounded: see its note).
__device__ __forceinline__ void box_muller(uint32_t x, uint32_t y, float* z0, float* z1) {
    double u1 = ((double)x + 1.0) / 4294967296.0;
    double u2 = (double)y / 4294967296.0;
    double r = sqrt(-2.0 * log(u1));
    double s, c;
    sincospi(2.0 * u2, &s, &c);
    *z0 = (float)(r * c);
    *z1 = (float)(r * s);
}

// Standard normal number `index` of a stream (rng::normal).
__device__ __forceinline__ float philox_normal(uint64_t seed, uint64_t stream, uint64_t index) {
    uint4x w = philox_block(seed, stream, index >> 2);
    int lane = (int)(index & 3);
    float z0, z1;
    box_muller(w.v[lane & 2], w.v[(lane & 2) + 1], &z0, &z1);
    return (lane & 1) ? z1 : z0;
}

// Kernels are written as `template <typename T> __device__ void NAME_impl(...)`
// over the storage type T and exported twice, as NAME_f32 and NAME_bf16
// (the Rust side adds the suffix). PARAMS is a macro of T giving the
// parenthesised parameter list, ARGS the parenthesised argument names:
//   #define SILU_PARAMS(T) (const T* x, T* y, int n)
//   EXPORT_F32_BF16(silu, SILU_PARAMS, (x, y, n))
#define EXPORT_F32_BF16(NAME, PARAMS, ARGS)                                          \
    extern "C" __global__ void NAME##_f32 PARAMS(float) { NAME##_impl<float> ARGS; } \
    extern "C" __global__ void NAME##_bf16 PARAMS(bf16) { NAME##_impl<bf16> ARGS; }

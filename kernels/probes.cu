// Probes: tiny kernels that test the device rather than an op of the
// network. `probe_mma` checks the mma.sync m16n8k16 fragment layout that
// conv.cu relies on (on a GPU it proves the layout; on the emulated device
// it checks the emulator's model of it). `probe_nhwc` evaluates the
// activation offset every conv load and store goes through at offsets past
// 2^31, without the memory such a tensor would take. The others each exercise one of
// the emulated device's checks: with `broken` = 0 they are correct, with
// `broken` = 1 they commit one deliberate bug, which tests/gpu/probes.rs
// expects the emulated device to catch (never launch them broken on a GPU).
//
// Layout and launch: in each kernel's comment. Numbers: none (correctness
// probes, a few hundred threads each).
#include "common.cuh"

// One warp (32 threads, grid 1): d[16 x 8] = a[16 x 16] b + c, d and c
// row-major f32, a row-major bf16, b (16 x 8) stored column by column
// (b[n * 16 + k]), through the same fragment registers conv.cu builds (c
// enters as the accumulator, in D's layout). broken = 1 swaps two of A's
// fragment registers.
extern "C" __global__ void probe_mma(const bf16* a, const bf16* b, const float* c, float* d, int broken) {
    const int lane = threadIdx.x, g = lane >> 2, q = lane & 3;
    auto pair = [](const bf16* p) {
        return (uint32_t)reinterpret_cast<const uint16_t*>(p)[0] |
               (uint32_t)reinterpret_cast<const uint16_t*>(p)[1] << 16;
    };
    uint32_t ra[4] = {pair(a + g * 16 + 2 * q), pair(a + (g + 8) * 16 + 2 * q), pair(a + g * 16 + 2 * q + 8),
                      pair(a + (g + 8) * 16 + 2 * q + 8)};
    if (broken) {
        uint32_t t = ra[1];
        ra[1] = ra[2];
        ra[2] = t;
    }
    const uint32_t rb[2] = {pair(b + g * 16 + 2 * q), pair(b + g * 16 + 2 * q + 8)};
    // C/D fragment: (g, 2q), (g, 2q+1), (g+8, 2q), (g+8, 2q+1).
    const int at[4] = {g * 8 + 2 * q, g * 8 + 2 * q + 1, (g + 8) * 8 + 2 * q, (g + 8) * 8 + 2 * q + 1};
    float acc[4];
    for (int r = 0; r < 4; ++r) acc[r] = c[at[r]];
    mma_16816(acc, ra, rb);
    for (int r = 0; r < 4; ++r) d[at[r]] = acc[r];
}

// One thread: nhwc(pixel, channels, ch) (common.cuh) written as two floats
// that hold it exactly, out[0] = offset / 2^24, out[1] = offset % 2^24.
extern "C" __global__ void probe_nhwc(long pixel, int channels, int ch, float* out) {
    const long offset = nhwc(pixel, channels, ch);
    out[0] = (float)(offset >> 24);
    out[1] = (float)(offset & 0xffffff);
}

// One block of 256 threads: y[0] = the sum of x[0..256), staged in shared
// memory and added by the last thread. broken = 1 drops the barrier
// between the stores and the sum (a shared-memory race).
extern "C" __global__ void probe_block_sum(const float* x, float* y, int broken) {
    __shared__ float staged[256];
    const int t = threadIdx.x;
    staged[t] = x[t];
    if (!broken) __syncthreads();
    if (t == 255) {
        float s = 0.0f;
        for (int i = 0; i < 256; ++i) s += staged[i];
        y[0] = s;
    }
}

// One block of 64 threads, each copying one value after a barrier.
// broken = 1 lets thread 5 return before the barrier.
extern "C" __global__ void probe_barrier(const float* x, float* y, int broken) {
    const int t = threadIdx.x;
    if (broken && t == 5) return;
    __syncthreads();
    y[t] = x[t];
}

// Grid-stride copy of n values. broken = 1 runs the loop one element too
// far (an off-by-one bound).
extern "C" __global__ void probe_copy(const float* x, float* y, int n, int broken) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n + broken; i += gridDim.x * blockDim.x) y[i] = x[i];
}

// One warp: y[lane] = the sum of x[0..32) (a full-mask butterfly). broken
// = 1 lets only lanes 0..15 call it, so its mask names lanes that are not
// there.
extern "C" __global__ void probe_warp_sum(const float* x, float* y, int broken) {
    const int lane = threadIdx.x;
    float v = x[lane];
    if (!broken || lane < 16) v = warp_sum(v);
    y[lane] = v;
}

// One block of 64 threads through 64 floats of dynamic shared memory,
// reversed. broken = 1 writes 64 floats further (past the launch's size).
extern "C" __global__ void probe_dynamic_shared(const float* x, float* y, int broken) {
    extern __shared__ float smem[];
    const int t = threadIdx.x;
    smem[t + 64 * broken] = x[t];
    __syncthreads();
    y[t] = smem[63 - t];
}

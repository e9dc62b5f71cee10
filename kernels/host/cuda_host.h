// The CUDA built-ins for compiling kernels/*.cu unchanged on the host, for
// the emulated device (src/emu/, kernels/host/emu_runtime.cpp). common.cuh
// includes this instead of <cuda_bf16.h> when the compiler is not nvcc.
//
// How a kernel runs here: every CUDA thread of a block is a fibre (its own
// stack) on one host worker thread; the runtime switches fibres at
// __syncthreads and at every warp-collective operation (shuffles, votes,
// __syncwarp, mma.sync), which it completes only when every lane its mask
// names has arrived. __shared__ variables are thread_local: one copy per
// host worker, shared by the block's fibres. Every load and store the kernel
// code makes is instrumented by the compiler (-fsanitize=kernel-address
// with outline calls); the runtime's hooks check it against the launch's
// buffers, the block's shared memory and the fibre's stack (see the
// runtime's header note for each check).
//
// What is exact: integer and f32/f64 arithmetic where the kernel asks for
// it (__f*_rn, fmaf), bf16 conversion (round to nearest even), the
// mma.sync fragment layouts (PTX ISA). What is not: the fast-math
// intrinsics (__expf is expf here), sincospi (reduced exactly, then sin
// and cos of pi r here), and
// floating-point contraction (the host build never fuses a * b + c).
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ thread_local
#define __launch_bounds__(...)

struct uint3 {
    unsigned x, y, z;
};
typedef uint3 dim3;
struct float2 {
    float x, y;
};
struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(16) int4 {
    int x, y, z, w;
};
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }

// ---- the runtime (kernels/host/emu_runtime.cpp, not instrumented) --------
namespace emu {
uint3 thread_idx();
uint3 block_idx();
dim3 block_dim();
dim3 grid_dim();
unsigned dynamic_shared_bytes();
void syncthreads();
[[noreturn]] void trap();
// A warp collective: every lane of `mask` contributes `value`; returns the
// value of lane `src(lane)` (shuffles), or the vote.
enum Collective : int { SHFL_IDX, SHFL_UP, SHFL_DOWN, SHFL_XOR, BALLOT, ANY, ALL, SYNCWARP };
uint64_t warp_collective(Collective op, unsigned mask, uint64_t value, int arg, int width);
// D (16 x 8, f32) += A (16 x 16, bf16, row) B (16 x 8, bf16, column), one
// warp: each lane passes its fragment registers (PTX ISA 9.0, section
// 9.7.14.5.8 "Matrix Fragments for mma.m16n8k16 with floating point type").
void mma_m16n8k16_bf16(float* d, const uint32_t* a, const uint32_t* b);
unsigned active_lanes();
}  // namespace emu

#define threadIdx (::emu::thread_idx())
#define blockIdx (::emu::block_idx())
#define blockDim (::emu::block_dim())
#define gridDim (::emu::grid_dim())
#define warpSize 32
inline void __syncthreads() { ::emu::syncthreads(); }
[[noreturn]] inline void __trap() { ::emu::trap(); }

// ---- warp shuffles and votes (mask semantics checked by the runtime) ------
namespace emu {
template <typename T> inline uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a register value");
    uint64_t b = 0;
    memcpy(&b, &v, sizeof(T));
    return b;
}
template <typename T> inline T from_bits(uint64_t b) {
    T v;
    memcpy(&v, &b, sizeof(T));
    return v;
}
template <typename T> inline T shfl(Collective op, unsigned mask, T v, int arg, int width) {
    return from_bits<T>(warp_collective(op, mask, to_bits(v), arg, width));
}
}  // namespace emu
template <typename T> inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    return ::emu::shfl(::emu::SHFL_IDX, mask, v, src, width);
}
template <typename T> inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return ::emu::shfl(::emu::SHFL_UP, mask, v, (int)delta, width);
}
template <typename T> inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return ::emu::shfl(::emu::SHFL_DOWN, mask, v, (int)delta, width);
}
template <typename T> inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    return ::emu::shfl(::emu::SHFL_XOR, mask, v, lane_mask, width);
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
    return (unsigned)::emu::warp_collective(::emu::BALLOT, mask, pred != 0, 0, 32);
}
inline int __any_sync(unsigned mask, int pred) { return (int)::emu::warp_collective(::emu::ANY, mask, pred != 0, 0, 32); }
inline int __all_sync(unsigned mask, int pred) { return (int)::emu::warp_collective(::emu::ALL, mask, pred != 0, 0, 32); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::emu::warp_collective(::emu::SYNCWARP, mask, 0, 0, 32); }
inline unsigned __activemask() { return ::emu::active_lanes(); }

// ---- atomics (blocks run in parallel on the host workers) ----------------
namespace emu {
// Atomically replaces *p by f(*p) (a compare-and-swap loop on its bits);
// returns the old value.
template <typename T, typename F> inline T atomic_update(T* p, F f) {
    static_assert(sizeof(T) == 4 || sizeof(T) == 8, "atomics on 4- and 8-byte words");
    typedef typename std::conditional<sizeof(T) == 4, uint32_t, uint64_t>::type U;
    U* u = reinterpret_cast<U*>(p);
    U old = __atomic_load_n(u, __ATOMIC_RELAXED), next;
    do {
        T v = from_bits<T>(old), r = f(v);
        memcpy(&next, &r, sizeof(T));
    } while (!__atomic_compare_exchange_n(u, &old, next, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    return from_bits<T>(old);
}
}  // namespace emu
template <typename T> inline T atomicAdd(T* p, T v) {
    return ::emu::atomic_update(p, [v](T x) { return (T)(x + v); });
}
template <typename T> inline T atomicMax(T* p, T v) {
    return ::emu::atomic_update(p, [v](T x) { return x < v ? v : x; });
}
template <typename T> inline T atomicMin(T* p, T v) {
    return ::emu::atomic_update(p, [v](T x) { return v < x ? v : x; });
}
template <typename T> inline T atomicExch(T* p, T v) {
    return ::emu::atomic_update(p, [v](T) { return v; });
}
template <typename T> inline T atomicCAS(T* p, T expected, T v) {
    return ::emu::atomic_update(p, [=](T x) { return x == expected ? v : x; });
}

// ---- bf16: storage of the upper 16 bits of an f32 -------------------------
struct __nv_bfloat16 {
    uint16_t bits;
};
inline float __bfloat162float(__nv_bfloat16 h) {
    uint32_t u = (uint32_t)h.bits << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
// Round to nearest, ties to even; NaN stays a (quiet) NaN.
inline __nv_bfloat16 __float2bfloat16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return {(uint16_t)((u >> 16) | 0x0040u)};
    u += 0x7fffu + ((u >> 16) & 1u);
    return {(uint16_t)(u >> 16)};
}

// ---- math -----------------------------------------------------------------
// The _rn intrinsics are single IEEE operations; the host build compiles
// with -ffp-contract=off, so each is exactly one rounding as on the GPU.
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline uint32_t __umulhi(uint32_t a, uint32_t b) { return (uint32_t)(((uint64_t)a * b) >> 32); }
// As CUDA's: the argument reduced exactly (x = k/2 + r, |r| <= 1/4), so
// only pi r is rounded, never pi x (src/rng.rs's cos(TAU u) rounds TAU u).
inline void sincospi(double x, double* s, double* c) {
    const double k = nearbyint(2.0 * x), r = x - 0.5 * k;
    const double sr = sin(M_PI * r), cr = cos(M_PI * r);
    switch ((long long)k & 3) {
        case 0: *s = sr; *c = cr; break;
        case 1: *s = cr; *c = -sr; break;
        case 2: *s = -sr; *c = -cr; break;
        default: *s = -cr; *c = sr; break;
    }
}
// CUDA's min/max overloads for mixed integer widths.
template <typename A, typename B> inline typename std::common_type<A, B>::type min(A a, B b) {
    return b < a ? b : a;
}
template <typename A, typename B> inline typename std::common_type<A, B>::type max(A a, B b) {
    return a < b ? b : a;
}

// ---- the kernel table the runtime launches from ---------------------------
// build.rs writes one host translation unit per kernel file: this header,
// the .cu file, and EMU_KERNEL entries naming every exported kernel, so the
// runtime can call each with the launch's packed arguments and check their
// number and kinds first.
namespace emu {
// Argument kinds: 'p' pointer, 'i' 32-bit integer, 'l' 64-bit integer,
// 'f' f32, 'd' f64.
template <typename A> constexpr char kind_of() {
    return std::is_pointer<A>::value                          ? 'p'
           : std::is_floating_point<A>::value && sizeof(A) == 4 ? 'f'
           : std::is_floating_point<A>::value                   ? 'd'
           : sizeof(A) == 8                                     ? 'l'
                                                                : 'i';
}
struct KernelEntry {
    const char* name;
    void (*function)();
    void (*invoke)(void (*function)(), const uint64_t* args);
    const char* kinds;  // one letter per parameter
};
// (Not instrumented: `args` is the runtime's, not device memory.)
template <typename... A, size_t... I>
__attribute__((no_sanitize("kernel-address"))) inline void invoke_with(void (*f)(A...), const uint64_t* args, std::index_sequence<I...>) {
    f(from_bits<A>(args[I])...);
}
template <typename... A> inline void invoke(void (*raw)(), const uint64_t* args) {
    invoke_with(reinterpret_cast<void (*)(A...)>(raw), args, std::index_sequence_for<A...>{});
}
// A dynamic shared array (`extern __shared__ T name[]`): its address in the
// calling host thread, and its capacity.
struct DynamicRegion {
    void* base;
    size_t capacity;
};
template <typename... A> inline KernelEntry entry(const char* name, void (*f)(A...)) {
    static const char kinds[] = {kind_of<A>()..., 0};
    return KernelEntry{name, reinterpret_cast<void (*)()>(f), &invoke<A...>, kinds};
}
}  // namespace emu
#define EMU_KERNEL(NAME) ::emu::entry(#NAME, &NAME)

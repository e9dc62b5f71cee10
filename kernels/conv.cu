// Convolution (and linear layers, its 1x1 case) as implicit GEMM, forward
// and backward, twins of src/cpu/conv.rs and src/cpu/linear.rs (the bias
// gradient is elementwise.cu's sum_rows).
//
// Computes: y = conv(x, W) + b (square kernel k, k odd, zero padding k/2,
// stride s), the input gradient dx ("dgrad"), the weight gradient dW
// ("wgrad", stored in f32 for either storage type: it feeds the f32 master
// weights), the bias gradient db = dy summed over rows (f32 accumulation).
// A linear layer is the 1x1 stride-1 case over x seen as [rows, 1, 1, in].
//
// Layout: NHWC activations, weight [cout, k, k, cin], bias [cout]. Every
// op is one GEMM C[M x N] = A[M x K] B[K x N] whose operands are gathered
// straight from the tensors into shared-memory tiles (no im2col buffer):
//   forward: M = n*ho*wo output pixels, N = cout, K = k*k*cin, in the
//            weight's own (ky, kx, ci) order; bias added in the epilogue.
//   dgrad:   one GEMM per stride phase (iy % s, ix % s), grid.z = s*s: the
//            phase's input pixels (M) take only the taps that reach them,
//            K = those taps * cout, N = cin. So stride 2 does no zero work.
//   wgrad:   M = cout, N = k*k*cin, K = output pixels, split over grid.z
//            into f32 partial sums that reduce_parts adds (when split).
// Launch: 256-thread blocks, each owning a 64 x 64 tile of C, blockIdx.x
// along M, blockIdx.y along N; K walked in slices of 32, staged global ->
// registers -> shared, so the next slice's loads are in flight during this
// slice's math. f32: plain FMA (SIMT), 4x4 outputs per thread, so results
// match the CPU to rounding. bf16: tensor cores (mma.sync m16n8k16, f32
// accumulation), 8 warps of 32 x 16 outputs. Pixel counts and weight
// sizes are int (the Rust side asserts they are below 2^31); activation
// element offsets are long (`nhwc`), so an activation may pass 2^31
// elements.
//
// Numbers: not yet measured on a GPU.
#include "common.cuh"

namespace conv {

constexpr int BM = 64, BN = 64, BK = 32, THREADS = 256;
// Elements of each operand tile that one thread stages per K slice.
constexpr int PER_THREAD = BM * BK / THREADS;
static_assert(BM == BN && PER_THREAD * THREADS == BN * BK, "square tiles");
static_assert(THREADS % BK == 0 && THREADS % BM == 0 && THREADS >= BM, "thread mapping");

template <typename T> __device__ __forceinline__ T zero();
template <> __device__ __forceinline__ float zero<float>() { return 0.0f; }
template <> __device__ __forceinline__ bf16 zero<bf16>() { return __float2bfloat16(0.0f); }

// Which tile element (row or column `mn`, depth `k`) element i of this
// thread stages. K-fast: a warp takes 32 consecutive k of one row (for
// operands contiguous along K, such as channels of a patch). MN-fast: a warp
// takes 32 consecutive rows of one k (operands contiguous along M or N).
template <bool KFAST> __device__ __forceinline__ int elem_mn(int i) {
    return KFAST ? (int)threadIdx.x / BK + i * (THREADS / BK) : (int)threadIdx.x % BM;
}
template <bool KFAST> __device__ __forceinline__ int elem_k(int i) {
    return KFAST ? (int)threadIdx.x % BK : (int)threadIdx.x / BM + i * (THREADS / BM);
}

// Shared tiles, laid out for the math that reads them.
template <typename T> struct Tiles;
template <> struct Tiles<float> {
    float a[BK][BM + 1];  // [k][m]; the +1 spreads K-fast stores over the banks
    float b[BK][BN + 1];  // [k][n]
    __device__ float& at_a(int m, int k) { return a[k][m]; }
    __device__ float& at_b(int n, int k) { return b[k][n]; }
};
template <> struct Tiles<bf16> {
    // Rows of k, padded to 40 (80 B) so a fragment's 8 rows x 4 pairs hit
    // 32 different banks; 4-byte pairs stay aligned.
    alignas(16) bf16 a[BM][BK + 8];  // [m][k]: the mma's row-major A
    alignas(16) bf16 b[BN][BK + 8];  // [n][k]: the mma's column-major B
    __device__ bf16& at_a(int m, int k) { return a[m][k]; }
    __device__ bf16& at_b(int n, int k) { return b[n][k]; }
};

// The block's 64 x 64 accumulators, and which (row, column) of the tile
// each one is: `each(f)` calls f(row, col, value) for all of this thread's.
template <typename T> struct Acc;

// f32: thread (tx, ty) of 16 x 16 owns rows ty + 16i and columns tx + 16j.
template <> struct Acc<float> {
    float c[4][4];
    __device__ void zero() {
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) c[i][j] = 0.0f;
    }
    __device__ void step(const Tiles<float>& s) {
        const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
#pragma unroll 8
        for (int k = 0; k < BK; ++k) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                a[i] = s.a[k][ty + 16 * i];
                b[i] = s.b[k][tx + 16 * i];
            }
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) c[i][j] = fmaf(a[i], b[j], c[i][j]);
        }
    }
    template <typename F> __device__ void each(F f) const {
        const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) f(ty + 16 * i, tx + 16 * j, c[i][j]);
    }
};

// Two consecutive bf16 of shared memory as one register (lower address in
// the low half: the element with the smaller index, as mma wants).
__device__ __forceinline__ uint32_t pair(const bf16* p) { return *reinterpret_cast<const uint32_t*>(p); }

// bf16: warp w owns rows 32 (w % 2) .. +32 and columns 16 (w / 2) .. +16,
// as 2 x 2 mma tiles of 16 x 8. Fragment layout (PTX ISA, m16n8k16):
// g = lane / 4, q = lane % 4; A regs: (g, 2q), (g+8, 2q), (g, 2q+8),
// (g+8, 2q+8), each with its right neighbour; B regs: k = 2q, 2q+8 (and
// +1) of column g; C: (g, 2q), (g, 2q+1), (g+8, 2q), (g+8, 2q+1).
template <> struct Acc<bf16> {
    float c[2][2][4];  // [m16 tile][n8 tile][fragment]
    __device__ void zero() {
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < 2; ++j)
#pragma unroll
                for (int r = 0; r < 4; ++r) c[i][j][r] = 0.0f;
    }
    __device__ void step(const Tiles<bf16>& s) {
        const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
        const int g = lane / 4, q = lane % 4;
        const int wm = (warp % 2) * 32, wn = (warp / 2) * 16;
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            uint32_t a[2][4], b[2][2];
#pragma unroll
            for (int mt = 0; mt < 2; ++mt) {
                const bf16* lo = &s.a[wm + mt * 16 + g][kk + 2 * q];
                const bf16* hi = &s.a[wm + mt * 16 + g + 8][kk + 2 * q];
                a[mt][0] = pair(lo);
                a[mt][1] = pair(hi);
                a[mt][2] = pair(lo + 8);
                a[mt][3] = pair(hi + 8);
            }
#pragma unroll
            for (int nt = 0; nt < 2; ++nt) {
                const bf16* col = &s.b[wn + nt * 8 + g][kk + 2 * q];
                b[nt][0] = pair(col);
                b[nt][1] = pair(col + 8);
            }
#pragma unroll
            for (int mt = 0; mt < 2; ++mt)
#pragma unroll
                for (int nt = 0; nt < 2; ++nt) mma_16816(c[mt][nt], a[mt], b[nt]);
        }
    }
    template <typename F> __device__ void each(F f) const {
        const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
        const int g = lane / 4, q = lane % 4;
        const int wm = (warp % 2) * 32, wn = (warp / 2) * 16;
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
            for (int nt = 0; nt < 2; ++nt)
#pragma unroll
                for (int r = 0; r < 4; ++r)
                    f(wm + mt * 16 + g + (r / 2) * 8, wn + nt * 8 + 2 * q + r % 2, c[mt][nt][r]);
    }
};

// The K loop shared by every GEMM here. A problem P says how its operands
// are gathered:
//   P::A_KFAST, P::B_KFAST       the staging orientation of each operand;
//   p.prepare(k0, k_end, buf)    per-slice setup in shared memory (wgrad's
//                                pixel table), run by all threads before
//                                the barrier that precedes p.load;
//   p.load(ra, rb, k0, k_end, buf)  stage this thread's PER_THREAD elements
//                                of the A and B slices at k0 (zero outside
//                                the problem: K >= k_end, rows, columns).
// Slices cover [k_begin, k_end); steps is the same for the whole block.
template <typename T, typename P>
__device__ void gemm_mainloop(P& p, Tiles<T>& s, Acc<T>& acc, int k_begin, int k_end) {
    const int steps = k_end > k_begin ? (k_end - k_begin + BK - 1) / BK : 0;
    if (steps == 0) return;
    T ra[PER_THREAD], rb[PER_THREAD];
    p.prepare(k_begin, k_end, 0);
    __syncthreads();
    p.load(ra, rb, k_begin, k_end, 0);
    for (int step = 0; step < steps; ++step) {
        const int k0 = k_begin + step * BK;
        const bool more = step + 1 < steps;
#pragma unroll
        for (int i = 0; i < PER_THREAD; ++i) {
            s.at_a(elem_mn<P::A_KFAST>(i), elem_k<P::A_KFAST>(i)) = ra[i];
            s.at_b(elem_mn<P::B_KFAST>(i), elem_k<P::B_KFAST>(i)) = rb[i];
        }
        // prepare's buffer (step + 1) & 1 was last read by load(step - 1),
        // two barriers ago.
        if (more) p.prepare(k0 + BK, k_end, (step + 1) & 1);
        __syncthreads();
        if (more) p.load(ra, rb, k0 + BK, k_end, (step + 1) & 1);
        acc.step(s);
        __syncthreads();
    }
}

// This block's 64 x 64 tile of C over K slices [k_begin, k_end) (all zeros
// for an empty range), each value handed to epilogue(row, col, value).
template <typename T, typename P, typename E>
__device__ __forceinline__ void gemm_tile(P& p, int k_begin, int k_end, E epilogue) {
    __shared__ Tiles<T> tiles;
    Acc<T> acc;
    acc.zero();
    gemm_mainloop(p, tiles, acc, k_begin, k_end);
    acc.each(epilogue);
}

struct Geom {
    int n, h, w, cin, cout, k, s, pad, ho, wo;
};

// Sets what every problem P below has: the geometry (padding k/2) and the
// origin of this block's tile of C (row m0, column n0).
template <typename P>
__device__ __forceinline__ void set_geometry(P& p, int n, int h, int w, int cin, int cout, int k, int s, int ho,
                                             int wo) {
    p.g = Geom{n, h, w, cin, cout, k, s, k / 2, ho, wo};
    p.m0 = blockIdx.x * BM;
    p.n0 = blockIdx.y * BN;
}

__device__ __forceinline__ bool inside(int i, int n) { return (unsigned)i < (unsigned)n; }

// Pixel p of an [n, h, w] grid as (image n, row y, column x).
__device__ __forceinline__ void split_pixel(int p, int h, int w, int& n, int& y, int& x) {
    n = p / (h * w);
    const int rem = p - n * (h * w);
    y = rem / w;
    x = rem - y * w;
}

// Where output pixel p's patch starts in x: (n*h, oy*s - pad, ox*s - pad,
// 0), or (-1, 0, 0, 0) for p >= end.
__device__ __forceinline__ int4 patch_origin(const Geom& g, int p, int end) {
    int4 e = make_int4(-1, 0, 0, 0);
    if (p < end) {
        int n, oy, ox;
        split_pixel(p, g.ho, g.wo, n, oy, ox);
        e = make_int4(n * g.h, oy * g.s - g.pad, ox * g.s - g.pad, 0);
    }
    return e;
}

// Patch column kk = (ky*k + kx)*cin + ci as (ci, ky, kx); all 0 unless ok.
__device__ __forceinline__ void patch_tap(const Geom& g, int kk, bool ok, int& ci, int& ky, int& kx) {
    ci = ky = kx = 0;
    if (ok) {
        const int tap = kk / g.cin;
        ci = kk - tap * g.cin;
        ky = tap / g.k;
        kx = tap - ky * g.k;
    }
}

// x at tap (ky, kx), channel ci of the patch that starts at e (patch_origin);
// 0 in the padding, for e past the end, or unless ok.
template <typename T>
__device__ __forceinline__ T patch_value(const T* x, const Geom& g, int4 e, int ky, int kx, int ci, bool ok) {
    const int iy = e.y + ky, ix = e.z + kx;
    T v = zero<T>();
    if (ok && e.x >= 0 && inside(iy, g.h) && inside(ix, g.w)) v = x[nhwc((e.x + iy) * g.w + ix, g.cin, ci)];
    return v;
}

// ---- forward ----------------------------------------------------------------
// A[m][kk] = x at output pixel m's tap (ky, kx), channel ci (0 in the
// padding), kk = (ky*k + kx)*cin + ci; B[kk][co] = W[co][kk].
template <typename T> struct Fwd {
    static constexpr bool A_KFAST = true, B_KFAST = true;
    const T* x;
    const T* wt;
    Geom g;
    int m0, n0, mtot, ktot;
    int4* rows;  // [BM]: output pixel -> (n*h, or -1 past the end; oy*s - pad; ox*s - pad)

    __device__ void init() {
        const int r = threadIdx.x;
        if (r < BM) rows[r] = patch_origin(g, m0 + r, mtot);
    }
    __device__ void prepare(int, int, int) {}
    __device__ void load(T (&ra)[PER_THREAD], T (&rb)[PER_THREAD], int k0, int k_end, int) {
        const int k = k0 + elem_k<true>(0);  // the same for all i (K-fast)
        const bool kin = k < k_end;
        int ci, ky, kx;
        patch_tap(g, k, kin, ci, ky, kx);
#pragma unroll
        for (int i = 0; i < PER_THREAD; ++i) {
            const int r = elem_mn<true>(i);
            const T va = patch_value(x, g, rows[r], ky, kx, ci, kin);
            T vb = zero<T>();
            if (kin && n0 + r < g.cout) vb = wt[(n0 + r) * ktot + k];
            ra[i] = va;
            rb[i] = vb;
        }
    }
};

template <typename T>
__device__ void conv_fwd_impl(const T* __restrict__ x, const T* __restrict__ wt, const T* __restrict__ bias,
                              T* __restrict__ y, int n, int h, int w, int cin, int cout, int k, int s, int ho,
                              int wo) {
    __shared__ int4 rows[BM];
    Fwd<T> p;
    p.x = x;
    p.wt = wt;
    set_geometry(p, n, h, w, cin, cout, k, s, ho, wo);
    p.mtot = n * ho * wo;
    p.ktot = k * k * cin;
    p.rows = rows;
    p.init();
    __syncthreads();
    gemm_tile<T>(p, 0, p.ktot, [&](int r, int c, float v) {
        const int m = p.m0 + r, co = p.n0 + c;
        if (m < p.mtot && co < cout) st(y, nhwc(m, cout, co), bias ? v + ld(bias, co) : v);
    });
}
#define CONV_FWD_PARAMS(T)                                                                                  \
    (const T* __restrict__ x, const T* __restrict__ wt, const T* __restrict__ bias, T* __restrict__ y, int n, \
     int h, int w, int cin, int cout, int k, int s, int ho, int wo)
EXPORT_F32_BF16(conv_fwd, CONV_FWD_PARAMS, (x, wt, bias, y, n, h, w, cin, cout, k, s, ho, wo))

// ---- dgrad --------------------------------------------------------------------
// Input pixel (iy, ix) receives dy[oy][ox] W[ky][kx] where iy + pad - ky =
// oy*s (same in x): only taps ky = iy + pad (mod s) reach it. Phase (py, px)
// = (iy % s, ix % s) fixes those taps: ky = ky0 + jy*s, jy < nky. In phase
// coordinates, A[m][kk] = dy[n][oy][ox][co] (0 where oy, ox fall outside),
// kk = (jy*nkx + jx)*cout + co; B[kk][ci] = W[co][ky][kx][ci].
template <typename T> struct Dgrad {
    static constexpr bool A_KFAST = true, B_KFAST = false;
    const T* dy;
    const T* wt;
    Geom g;
    int m0, n0, mtot;
    int py, px, ky0, kx0, nkx, hp, wp;
    int4* rows;  // [BM]: input pixel -> (its index in dx, or -1; n*ho; iy + pad; ix + pad)

    __device__ void init() {
        const int r = threadIdx.x, m = m0 + r;
        if (r >= BM) return;
        int4 e = make_int4(-1, 0, 0, 0);
        if (m < mtot) {
            int n, a, b;  // image, phase row, phase column
            split_pixel(m, hp, wp, n, a, b);
            const int iy = py + a * g.s, ix = px + b * g.s;
            e = make_int4((n * g.h + iy) * g.w + ix, n * g.ho, iy + g.pad, ix + g.pad);
        }
        rows[r] = e;
    }
    // K index -> (co, ky, kx); only called with kk < nky*nkx*cout.
    __device__ void tap(int kk, int& co, int& ky, int& kx) const {
        const int j = kk / g.cout, jy = j / nkx;
        co = kk - j * g.cout;
        ky = ky0 + jy * g.s;
        kx = kx0 + (j - jy * nkx) * g.s;
    }
    __device__ void prepare(int, int, int) {}
    __device__ void load(T (&ra)[PER_THREAD], T (&rb)[PER_THREAD], int k0, int k_end, int) {
        {
            const int kk = k0 + elem_k<true>(0);
            const bool kin = kk < k_end;
            int co = 0, ky = 0, kx = 0;
            if (kin) tap(kk, co, ky, kx);
#pragma unroll
            for (int i = 0; i < PER_THREAD; ++i) {
                const int4 e = rows[elem_mn<true>(i)];
                // ty = oy*s exactly (the phase guarantees it); check the sign
                // before dividing, as division truncates toward zero.
                const int ty = e.z - ky, tx = e.w - kx;
                const int oy = ty / g.s, ox = tx / g.s;
                T v = zero<T>();
                if (kin && e.x >= 0 && ty >= 0 && tx >= 0 && oy < g.ho && ox < g.wo)
                    v = dy[nhwc((e.y + oy) * g.wo + ox, g.cout, co)];
                ra[i] = v;
            }
        }
        const int ci = n0 + elem_mn<false>(0);  // the same for all i (N-fast)
#pragma unroll
        for (int i = 0; i < PER_THREAD; ++i) {
            const int kk = k0 + elem_k<false>(i);
            T v = zero<T>();
            if (kk < k_end && ci < g.cin) {
                int co, ky, kx;
                tap(kk, co, ky, kx);
                v = wt[((co * g.k + ky) * g.k + kx) * g.cin + ci];
            }
            rb[i] = v;
        }
    }
};

template <typename T>
__device__ void conv_dgrad_impl(const T* __restrict__ dy, const T* __restrict__ wt, T* __restrict__ dx, int n, int h,
                                int w, int cin, int cout, int k, int s, int ho, int wo) {
    __shared__ int4 rows[BM];
    Dgrad<T> p;
    p.dy = dy;
    p.wt = wt;
    set_geometry(p, n, h, w, cin, cout, k, s, ho, wo);
    p.py = blockIdx.z / s;
    p.px = blockIdx.z % s;
    p.ky0 = (p.py + p.g.pad) % s;
    p.kx0 = (p.px + p.g.pad) % s;
    const int nky = (k - p.ky0 + s - 1) / s;  // k - ky0 >= 0: ky0 < s <= 2, k >= 1
    p.nkx = (k - p.kx0 + s - 1) / s;
    p.hp = (h - p.py + s - 1) / s;  // input rows of this phase (0 if h <= py)
    p.wp = (w - p.px + s - 1) / s;
    p.mtot = n * p.hp * p.wp;
    if (p.m0 >= p.mtot) return;  // the grid is sized for the largest phase; whole block
    p.rows = rows;
    p.init();
    __syncthreads();
    // K = 0 (no tap reaches the phase): it gets zeros.
    gemm_tile<T>(p, 0, nky * p.nkx * cout, [&](int r, int c, float v) {
        const int pixel = rows[r].x, ci = p.n0 + c;
        if (pixel >= 0 && ci < cin) st(dx, nhwc(pixel, cin, ci), v);
    });
}
#define CONV_DGRAD_PARAMS(T)                                                                                   \
    (const T* __restrict__ dy, const T* __restrict__ wt, T* __restrict__ dx, int n, int h, int w, int cin, int cout, \
     int k, int s, int ho, int wo)
EXPORT_F32_BF16(conv_dgrad, CONV_DGRAD_PARAMS, (dy, wt, dx, n, h, w, cin, cout, k, s, ho, wo))

// ---- wgrad --------------------------------------------------------------------
// dW[co][kk] = sum over output pixels p of dy[p][co] * patch(p)[kk]:
// A[co][p] = dy[p][co], B[p][kk] = x at pixel p's tap (ky, kx), channel ci.
// Each thread stages one fixed column kk of B (decoded once); the pixels of
// each K slice are decoded once per slice into a double-buffered table.
template <typename T> struct Wgrad {
    static constexpr bool A_KFAST = false, B_KFAST = false;
    const T* x;
    const T* dy;
    Geom g;
    int m0, n0;
    int4 (*pix)[BK];  // [2][BK]: output pixel -> (n*h, or -1 past k_end; oy*s - pad; ox*s - pad)
    bool col_ok;
    int ci, ky, kx;

    __device__ void init(int kc) {
        const int kk = n0 + elem_mn<false>(0);
        col_ok = kk < kc;
        patch_tap(g, kk, col_ok, ci, ky, kx);
    }
    __device__ void prepare(int k0, int k_end, int buf) {
        const int t = threadIdx.x;
        if (t < BK) pix[buf][t] = patch_origin(g, k0 + t, k_end);
    }
    __device__ void load(T (&ra)[PER_THREAD], T (&rb)[PER_THREAD], int k0, int k_end, int buf) {
        const int co = m0 + elem_mn<false>(0);
#pragma unroll
        for (int i = 0; i < PER_THREAD; ++i) {
            const int kl = elem_k<false>(i), p = k0 + kl;
            T va = zero<T>();
            if (co < g.cout && p < k_end) va = dy[nhwc(p, g.cout, co)];
            ra[i] = va;
            rb[i] = patch_value(x, g, pix[buf][kl], ky, kx, ci, col_ok);
        }
    }
};

// Block z sums output pixels [z*chunk, min((z+1)*chunk, n*ho*wo)). With
// `part` null (one split) it writes dw; else its f32 partial to part[z].
// dw is f32 whatever T is: the optimizer's f32 master weights take the
// gradient as it was accumulated, never rounded to bf16.
template <typename T>
__device__ void conv_wgrad_impl(const T* __restrict__ x, const T* __restrict__ dy, float* __restrict__ dw,
                                float* __restrict__ part, int n, int h, int w, int cin, int cout, int k, int s, int ho,
                                int wo, int chunk) {
    __shared__ int4 pix[2][BK];
    Wgrad<T> p;
    p.x = x;
    p.dy = dy;
    set_geometry(p, n, h, w, cin, cout, k, s, ho, wo);
    p.pix = pix;
    const int kc = k * k * cin, pixels = n * ho * wo;
    p.init(kc);
    const int k_begin = blockIdx.z * chunk, k_end = min(k_begin + chunk, pixels);
    gemm_tile<T>(p, k_begin, k_end, [&](int r, int c, float v) {
        const int co = p.m0 + r, kk = p.n0 + c;
        if (co >= cout || kk >= kc) return;
        const int i = co * kc + kk;
        if (part) part[(long)blockIdx.z * (cout * kc) + i] = v;
        else dw[i] = v;
    });
}
#define CONV_WGRAD_PARAMS(T)                                                                                  \
    (const T* __restrict__ x, const T* __restrict__ dy, float* __restrict__ dw, float* __restrict__ part, int n, int h, \
     int w, int cin, int cout, int k, int s, int ho, int wo, int chunk)
EXPORT_F32_BF16(conv_wgrad, CONV_WGRAD_PARAMS, (x, dy, dw, part, n, h, w, cin, cout, k, s, ho, wo, chunk))

// ---- reductions -----------------------------------------------------------------
// out[i] = sum over z < parts of part[z*count + i] (the split wgrad, f32).
extern "C" __global__ void conv_reduce_parts(const float* __restrict__ part, float* __restrict__ out, int count,
                                             int parts) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < count; i += gridDim.x * blockDim.x) {
        float acc = 0.0f;
        for (int z = 0; z < parts; ++z) acc += part[(long)z * count + i];
        out[i] = acc;
    }
}

}  // namespace conv

// Multi-head self-attention over the pixels of an image, flash style
// (twin of src/cpu/attention.rs, ADM's QKVAttentionLegacy):
//   out = softmax(q k^T / sqrt(head_dim)) v
// computed tile by tile with an online softmax, so the tokens x tokens
// matrix never exists; the forward also writes the log-sum-exp of every
// query row, from which the backward recomputes the probabilities.
//
// Layout: qkv is [n, h, w, 3c], the T = h*w pixels are the tokens; head j
// reads channels 3*D*j .. of each pixel as [q (D), k (D), v (D)] (the legacy
// order) and writes channels D*j .. D*(j+1) of the [n, h, w, c] output;
// lse and delta are f32 [n, heads, T] (natural log). dqkv has qkv's layout.
//
// Launch: 128 threads, tiles of 64 queries x 64 keys, every tile in f32 in
// dynamic shared memory (sizes below, mirrored in src/cuda/attention.rs;
// a kernel given less traps instead of writing out of bounds).
//   attention_fwd_hdD        grid (ceil(T/64), heads, n): one CTA per query
//                            tile, K/V tiles streamed through shared memory.
//   attention_bwd_delta      one warp per (token, head): delta = rowsum(dO*O).
//   attention_bwd_dkdv_hdD   grid (ceil(T/64), heads, n): one CTA per key
//                            tile, streams the query tiles, writes dK, dV.
//   attention_bwd_dq_hdD     grid (ceil(T/64), heads, n): one CTA per query
//                            tile, streams the key tiles, writes dQ.
// The backward is FlashAttention-2's without atomics: P and dP are
// recomputed in both the dK/dV and the dQ kernel, and every element of
// dqkv is written by exactly one thread (no zeroing, no scratch for dQ).
// Head dims 32 and 64 are instantiated (D is a template parameter).
//
// Arithmetic: SIMT, f32 throughout (bf16 storage is widened on load and
// rounded once on store); no tensor cores yet. A thread owns a 4 x 8 block
// of each 64 x 64 score tile (4 rows ty*4+i, 8 columns tx+8*j, tx = lane&7),
// and the 4 x D/8 block of the output rows it scores. Scores are kept in
// base-2 units (scale*log2(e) folded into Q or K) and exponentiated with
// exp2f.
//
// Numbers: not yet measured on a GPU.
#include "common.cuh"

extern __shared__ float4 attn_smem[]; // every kernel's tiles (dynamic size)

namespace {

constexpr int BM = 64;       // query rows per tile
constexpr int BN = 64;       // key columns per tile
constexpr int THREADS = 128; // 16 row groups (ty) x 8 column lanes (tx)
constexpr int TR = 4;        // rows of a tile per thread: ty*4 + i
constexpr int TC = 8;        // columns of a tile per thread: tx + 8*j
constexpr int LD4 = 68;      // stride of arrays read as float4 (multiple of 4)
constexpr int LD1 = 65;      // stride of transposed arrays stored per tile (odd)
constexpr float LOG2E = 1.4426950408889634f;
constexpr float LN2 = 0.6931471805599453f;

static_assert(BM == 16 * TR && BN == TC * 8 && THREADS == 128, "thread tiling");

// Shared memory (floats) of each kernel; src/cuda/attention.rs mirrors these.
template <int D> __host__ __device__ constexpr int fwd_smem_floats() { return D * LD4 + BN * LD4 + D * LD1 + BN * D; }
template <int D> __host__ __device__ constexpr int dkdv_smem_floats() { return 2 * D * LD4 + 2 * BM * LD4 + 2 * D * LD1 + 2 * BM; }
template <int D> __host__ __device__ constexpr int dq_smem_floats() { return 2 * D * LD4 + BN * LD4 + 2 * D * LD1; }

// The dynamic shared memory as floats, after checking it holds `floats` of
// them: a launch with less is a bug on the host side, so stop loudly rather
// than write past the allocation.
__device__ __forceinline__ float* checked_smem(int floats) {
    if (dynamic_smem_bytes() < (unsigned)floats * 4u) __trap();
    return reinterpret_cast<float*>(attn_smem);
}

__device__ __forceinline__ float4 ld4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ void st4(float* p, float a, float b, float c, float d) {
    *reinterpret_cast<float4*>(p) = make_float4(a, b, c, d);
}

// Max / sum over the 8 lanes tx = 0..7 that share a row group (lane bits 0-2).
__device__ __forceinline__ float max8(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 4));
    return v;
}
__device__ __forceinline__ float sum8(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    v += __shfl_xor_sync(0xffffffffu, v, 2);
    v += __shfl_xor_sync(0xffffffffu, v, 4);
    return v;
}

// One step x of a tile product, for this thread's 4 x J block: acc[i][j] +=
// a[x*LD4 + ty*4 + i] * b[x*BX + (tx+8j)*BJ] (a read as one float4).
template <int BX, int BJ, int J>
__device__ __forceinline__ void fma_step(const float* a, const float* b, int x, int tx, int ty, float (&acc)[TR][J]) {
    const float4 a4 = ld4(&a[x * LD4 + ty * TR]);
    const float av[TR] = {a4.x, a4.y, a4.z, a4.w};
#pragma unroll
    for (int j = 0; j < J; ++j) {
        const float bv = b[x * BX + (tx + 8 * j) * BJ];
#pragma unroll
        for (int i = 0; i < TR; ++i) acc[i][j] = fmaf(av[i], bv, acc[i][j]);
    }
}

// Stages channels 0..D-1 of the 64 tokens t0.. of two operands (token t's
// channel d at a[t*a_stride + d], times a_scale, and at b[t*b_stride + d];
// zeros past the last token), spread over the CTA: put(row, d, a, b) for
// every row of the tile and channel.
template <int D, typename T, typename F>
__device__ __forceinline__ void stage_tile(const T* __restrict__ a, long a_stride, float a_scale,
                                           const T* __restrict__ b, long b_stride, int t0, int tokens, F put) {
    static_assert(BM == BN, "query and key tiles have the same rows");
    for (int i = threadIdx.x; i < BM * D; i += THREADS) {
        const int r = i / D, d = i % D, tok = t0 + r;
        float av = 0.0f, bv = 0.0f;
        if (tok < tokens) {
            av = ld(a, tok * a_stride + d) * a_scale;
            bv = ld(b, tok * b_stride + d);
        }
        put(r, d, av, bv);
    }
}

} // namespace

// ---- forward ---------------------------------------------------------------

// Shared: Qt[d][r] (Q * scale * log2e, transposed, LD4), Ps[c][r] (this
// tile's probabilities, LD4), Kt[d][c] (LD1), Vs[c][e] (stride D).
template <typename T, int D>
__device__ void attention_fwd(const T* __restrict__ qkv, T* __restrict__ out, float* __restrict__ lse,
                              int tokens, int heads, float scale) {
    static_assert(D % TC == 0 && D <= 128, "head dim");
    constexpr int DC = D / TC; // output columns per thread: tx + 8*j
    float* Qt = checked_smem(fwd_smem_floats<D>());
    float* Ps = Qt + D * LD4;
    float* Kt = Ps + BN * LD4;
    float* Vs = Kt + D * LD1;

    const int tid = threadIdx.x, tx = tid & 7, ty = tid >> 3;
    const int q0 = blockIdx.x * BM, head = blockIdx.y, img = blockIdx.z;
    const long C = (long)heads * D, C3 = 3 * C;
    const T* base = qkv + (long)img * tokens * C3 + (long)head * 3 * D;
    const float qscale = scale * LOG2E;

    for (int i = tid; i < BM * D; i += THREADS) {
        const int r = i / D, d = i % D, tok = q0 + r;
        Qt[d * LD4 + r] = tok < tokens ? ld(base, tok * C3 + d) * qscale : 0.0f;
    }

    float o[TR][DC], m[TR], l[TR];
#pragma unroll
    for (int i = 0; i < TR; ++i) {
        m[i] = -INFINITY;
        l[i] = 0.0f; // this thread's share of the row sum (reduced at the end)
#pragma unroll
        for (int j = 0; j < DC; ++j) o[i][j] = 0.0f;
    }

    for (int k0 = 0; k0 < tokens; k0 += BN) {
        __syncthreads(); // Q stored; the previous tile's Kt, Vs, Ps all read
        // Padding keys: zeros (p is 0 there, 0 * 0 stays 0).
        stage_tile<D>(base + D, C3, 1.0f, base + 2 * D, C3, k0, tokens, [&](int c, int d, float kv, float vv) {
            Kt[d * LD1 + c] = kv;
            Vs[c * D + d] = vv;
        });
        __syncthreads();

        float s[TR][TC];
#pragma unroll
        for (int i = 0; i < TR; ++i)
#pragma unroll
            for (int j = 0; j < TC; ++j) s[i][j] = 0.0f;
#pragma unroll 4
        for (int d = 0; d < D; ++d) fma_step<LD1, 1>(Qt, Kt, d, tx, ty, s);

        // Online softmax. Column k0 is a real token, so every row's tile max
        // is finite after the reduction and exp2f(-inf - finite) = 0 masks.
#pragma unroll
        for (int j = 0; j < TC; ++j)
            if (k0 + tx + 8 * j >= tokens) {
#pragma unroll
                for (int i = 0; i < TR; ++i) s[i][j] = -INFINITY;
            }
#pragma unroll
        for (int i = 0; i < TR; ++i) {
            float mx = s[i][0];
#pragma unroll
            for (int j = 1; j < TC; ++j) mx = fmaxf(mx, s[i][j]);
            const float m_new = fmaxf(m[i], max8(mx));
            const float alpha = exp2f(m[i] - m_new); // 0 on the first tile
            m[i] = m_new;
            float sum = 0.0f;
#pragma unroll
            for (int j = 0; j < TC; ++j) {
                s[i][j] = exp2f(s[i][j] - m_new);
                sum += s[i][j];
            }
            l[i] = l[i] * alpha + sum;
#pragma unroll
            for (int j = 0; j < DC; ++j) o[i][j] *= alpha;
        }
#pragma unroll
        for (int j = 0; j < TC; ++j) st4(&Ps[(tx + 8 * j) * LD4 + ty * TR], s[0][j], s[1][j], s[2][j], s[3][j]);
        __syncthreads();

#pragma unroll 4
        for (int c = 0; c < BN; ++c) fma_step<D, 1>(Ps, Vs, c, tx, ty, o);
    }

#pragma unroll
    for (int i = 0; i < TR; ++i) {
        const float total = sum8(l[i]); // >= 1: the row max contributes exp2(0)
        const int tok = q0 + ty * TR + i;
        if (tok < tokens) {
            const float inv = 1.0f / total;
            const long row = ((long)img * tokens + tok) * C + (long)head * D;
#pragma unroll
            for (int j = 0; j < DC; ++j) st(out, row + tx + 8 * j, o[i][j] * inv);
            if (tx == 0) lse[((long)img * heads + head) * tokens + tok] = (m[i] + log2f(total)) * LN2;
        }
    }
}

#define FWD_PARAMS(T) \
    (const T* __restrict__ qkv, T* __restrict__ out, float* __restrict__ lse, int tokens, int heads, float scale)
#define FWD_ARGS (qkv, out, lse, tokens, heads, scale)
template <typename T> __device__ void attention_fwd_hd32_impl FWD_PARAMS(T) { attention_fwd<T, 32> FWD_ARGS; }
template <typename T> __device__ void attention_fwd_hd64_impl FWD_PARAMS(T) { attention_fwd<T, 64> FWD_ARGS; }
EXPORT_F32_BF16(attention_fwd_hd32, FWD_PARAMS, FWD_ARGS)
EXPORT_F32_BF16(attention_fwd_hd64, FWD_PARAMS, FWD_ARGS)

// ---- backward: delta = rowsum(dO * O) ------------------------------------

// out and dy are [n*T*heads, head_dim] seen flat (row = (img*T + tok)*heads
// + head); delta is [n, heads, T]. One warp per row, 8 rows per 256 threads.
template <typename T>
__device__ void attention_bwd_delta_impl(const T* __restrict__ out, const T* __restrict__ dy,
                                         float* __restrict__ delta, int tokens, int heads, int head_dim,
                                         long rows) {
    const long row = (long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= rows) return; // warp-uniform: the whole warp leaves together
    const int lane = threadIdx.x & 31;
    float acc = 0.0f;
    for (int e = lane; e < head_dim; e += 32) acc += ld(out, row * head_dim + e) * ld(dy, row * head_dim + e);
    acc = warp_sum(acc);
    if (lane == 0) {
        const long per_image = (long)tokens * heads;
        const long img = row / per_image;
        const int tok = (int)((row % per_image) / heads), head = (int)(row % heads);
        delta[(img * heads + head) * tokens + tok] = acc;
    }
}
#define DELTA_PARAMS(T) \
    (const T* out, const T* dy, float* delta, int tokens, int heads, int head_dim, long rows)
EXPORT_F32_BF16(attention_bwd_delta, DELTA_PARAMS, (out, dy, delta, tokens, heads, head_dim, rows))

// ---- backward: pieces shared by the dK/dV and dQ kernels -----------------

namespace {

// A backward CTA's (image, head), from its grid (tile, head, image): token
// t's q, k, v at qkv[t*C3 + {0, D, 2D}] (their gradients at the same places
// of dqkv), its dO at dy[t*C], its lse and delta at lse[t], delta[t].
template <typename T> struct BwdHead {
    long C, C3;
    const T* qkv;
    const T* dy;
    const float* lse;
    const float* delta;
    T* dqkv;
};

template <typename T, int D>
__device__ __forceinline__ BwdHead<T> bwd_head(const T* qkv, const T* dy, const float* lse, const float* delta,
                                               T* dqkv, int tokens, int heads) {
    const int head = blockIdx.y, img = blockIdx.z;
    BwdHead<T> h;
    h.C = (long)heads * D;
    h.C3 = 3 * h.C;
    h.qkv = qkv + (long)img * tokens * h.C3 + (long)head * 3 * D;
    h.dy = dy + (long)img * tokens * h.C + (long)head * D;
    h.lse = lse + ((long)img * heads + head) * tokens;
    h.delta = delta + ((long)img * heads + head) * tokens;
    h.dqkv = dqkv + (long)img * tokens * h.C3 + (long)head * 3 * D;
    return h;
}

// Query token tok's log-sum-exp (base 2) and delta; 0 for a padding token.
__device__ __forceinline__ void query_lse_delta(const float* lse, const float* delta, int tok, int tokens, float& L,
                                                float& De) {
    L = tok < tokens ? lse[tok] * LOG2E : 0.0f;
    De = tok < tokens ? delta[tok] : 0.0f;
}

// Recomputes this thread's 4 x 8 block of a tile pair's scores s (base 2)
// and of dp: s[i][j] = sum over d of sa[d][ty*4+i] sb[d][tx+8j], dp likewise
// from pa and pb (sa, pa stride LD4; sb, pb stride LD1).
template <int D>
__device__ __forceinline__ void scores_and_dp(const float* sa, const float* sb, const float* pa, const float* pb,
                                              int tx, int ty, float (&s)[TR][TC], float (&dp)[TR][TC]) {
#pragma unroll
    for (int i = 0; i < TR; ++i)
#pragma unroll
        for (int j = 0; j < TC; ++j) s[i][j] = dp[i][j] = 0.0f;
#pragma unroll 2
    for (int d = 0; d < D; ++d) {
        fma_step<LD1, 1>(sa, sb, d, tx, ty, s);
        fma_step<LD1, 1>(pa, pb, d, tx, ty, dp);
    }
}

// P = exp2(s - L) from a base-2 score and its query's base-2 lse; 0 for padding.
__device__ __forceinline__ float recompute_p(float s, float L, bool real) { return real ? exp2f(s - L) : 0.0f; }

// Writes acc * mul to channels off + tx+8j of this thread's tile rows
// t0 + ty*4 + i of dqkv (real tokens only).
template <typename T, int DC>
__device__ __forceinline__ void store_rows(const BwdHead<T>& h, int t0, int tokens, int tx, int ty, int off,
                                           const float (&acc)[TR][DC], float mul) {
#pragma unroll
    for (int i = 0; i < TR; ++i) {
        const int tok = t0 + ty * TR + i;
        if (tok < tokens) {
            T* row = h.dqkv + tok * h.C3;
#pragma unroll
            for (int j = 0; j < DC; ++j) st(row, off + tx + 8 * j, acc[i][j] * mul);
        }
    }
}

} // namespace

// Parameters of the dK/dV and dQ kernels (layouts at the top of the file).
#define BWD_PARAMS(T)                                                                           \
    (const T* __restrict__ qkv, const T* __restrict__ dy, const float* __restrict__ lse,                 \
     const float* __restrict__ delta, T* __restrict__ dqkv, int tokens, int heads, float scale)
#define BWD_ARGS (qkv, dy, lse, delta, dqkv, tokens, heads, scale)

// ---- backward: dK, dV (one CTA per key tile) -----------------------------

// Thread: keys ty*4+i of the tile (rows of S^T), queries tx+8*j (columns).
// Shared: Kt[d][c] (K * scale * log2e, LD4), Vt[d][c] (LD4), Pt[r][c] and
// dSt[r][c] (this query tile's P and dS, LD4), Qt[d][r] and dOt[d][r] (LD1),
// then lse (base 2) and delta of the query tile.
template <typename T, int D>
__device__ void attention_bwd_dkdv BWD_PARAMS(T) {
    static_assert(D % TC == 0 && D <= 128, "head dim");
    constexpr int DC = D / TC;
    float* Kt = checked_smem(dkdv_smem_floats<D>());
    float* Vt = Kt + D * LD4;
    float* Pt = Vt + D * LD4;
    float* dSt = Pt + BM * LD4;
    float* Qt = dSt + BM * LD4;
    float* dOt = Qt + D * LD1;
    float* Ls = dOt + D * LD1;
    float* Ds = Ls + BM;

    const int tid = threadIdx.x, tx = tid & 7, ty = tid >> 3;
    const int k0 = blockIdx.x * BN;
    const BwdHead<T> h = bwd_head<T, D>(qkv, dy, lse, delta, dqkv, tokens, heads);
    const float kscale = scale * LOG2E;

    stage_tile<D>(h.qkv + D, h.C3, kscale, h.qkv + 2 * D, h.C3, k0, tokens, [&](int c, int d, float kv, float vv) {
        Kt[d * LD4 + c] = kv;
        Vt[d * LD4 + c] = vv;
    });

    float dk[TR][DC], dv[TR][DC];
#pragma unroll
    for (int i = 0; i < TR; ++i)
#pragma unroll
        for (int j = 0; j < DC; ++j) dk[i][j] = dv[i][j] = 0.0f;

    for (int q0 = 0; q0 < tokens; q0 += BM) {
        __syncthreads(); // K, V stored; the previous query tile all read
        stage_tile<D>(h.qkv, h.C3, 1.0f, h.dy, h.C, q0, tokens, [&](int r, int d, float qv, float gv) {
            Qt[d * LD1 + r] = qv;
            dOt[d * LD1 + r] = gv;
        });
        for (int r = tid; r < BM; r += THREADS) query_lse_delta(h.lse, h.delta, q0 + r, tokens, Ls[r], Ds[r]);
        __syncthreads();

        float s[TR][TC], dp[TR][TC]; // S^T and dP^T: rows are keys
        scores_and_dp<D>(Kt, Qt, Vt, dOt, tx, ty, s, dp);
        // P^T = exp(S^T - lse), dS^T = P^T (dP^T - delta); padding queries: 0.
#pragma unroll
        for (int j = 0; j < TC; ++j) {
            const int r = tx + 8 * j;
            const bool real = q0 + r < tokens;
            const float L = Ls[r], De = Ds[r];
            float p[TR], g[TR];
#pragma unroll
            for (int i = 0; i < TR; ++i) {
                p[i] = recompute_p(s[i][j], L, real);
                g[i] = p[i] * (dp[i][j] - De);
            }
            st4(&Pt[r * LD4 + ty * TR], p[0], p[1], p[2], p[3]);
            st4(&dSt[r * LD4 + ty * TR], g[0], g[1], g[2], g[3]);
        }
        __syncthreads();

        // dV += P^T dO, dK += dS^T Q (scale applied at the end).
#pragma unroll 2
        for (int r = 0; r < BM; ++r) {
            fma_step<1, LD1>(Pt, dOt, r, tx, ty, dv);
            fma_step<1, LD1>(dSt, Qt, r, tx, ty, dk);
        }
    }

    store_rows(h, k0, tokens, tx, ty, D, dk, scale);
    store_rows(h, k0, tokens, tx, ty, 2 * D, dv, 1.0f);
}

// ---- backward: dQ (one CTA per query tile) -------------------------------

// Thread: queries ty*4+i, keys tx+8*j. Shared: Qt[d][r] (Q * scale * log2e,
// LD4), dOt[d][r] (LD4), dSs[c][r] (this key tile's dS, LD4), Kt[d][c] and
// Vt[d][c] (LD1).
template <typename T, int D>
__device__ void attention_bwd_dq BWD_PARAMS(T) {
    static_assert(D % TC == 0 && D <= 128, "head dim");
    constexpr int DC = D / TC;
    float* Qt = checked_smem(dq_smem_floats<D>());
    float* dOt = Qt + D * LD4;
    float* dSs = dOt + D * LD4;
    float* Kt = dSs + BN * LD4;
    float* Vt = Kt + D * LD1;

    const int tx = threadIdx.x & 7, ty = threadIdx.x >> 3;
    const int q0 = blockIdx.x * BM;
    const BwdHead<T> h = bwd_head<T, D>(qkv, dy, lse, delta, dqkv, tokens, heads);
    const float qscale = scale * LOG2E;

    stage_tile<D>(h.qkv, h.C3, qscale, h.dy, h.C, q0, tokens, [&](int r, int d, float qv, float gv) {
        Qt[d * LD4 + r] = qv;
        dOt[d * LD4 + r] = gv;
    });
    float L[TR], De[TR], dq[TR][DC];
#pragma unroll
    for (int i = 0; i < TR; ++i) {
        query_lse_delta(h.lse, h.delta, q0 + ty * TR + i, tokens, L[i], De[i]);
#pragma unroll
        for (int j = 0; j < DC; ++j) dq[i][j] = 0.0f;
    }

    for (int k0 = 0; k0 < tokens; k0 += BN) {
        __syncthreads(); // Q, dO stored; the previous key tile all read
        stage_tile<D>(h.qkv + D, h.C3, 1.0f, h.qkv + 2 * D, h.C3, k0, tokens, [&](int c, int d, float kv, float vv) {
            Kt[d * LD1 + c] = kv;
            Vt[d * LD1 + c] = vv;
        });
        __syncthreads();

        float s[TR][TC], dp[TR][TC];
        scores_and_dp<D>(Qt, Kt, dOt, Vt, tx, ty, s, dp);
        // dS = P (dP - delta), P = exp(S - lse); padding keys: 0.
#pragma unroll
        for (int j = 0; j < TC; ++j) {
            const int c = tx + 8 * j;
            const bool real = k0 + c < tokens;
            float g[TR];
#pragma unroll
            for (int i = 0; i < TR; ++i) {
                const float p = recompute_p(s[i][j], L[i], real);
                g[i] = p * (dp[i][j] - De[i]);
            }
            st4(&dSs[c * LD4 + ty * TR], g[0], g[1], g[2], g[3]);
        }
        __syncthreads();

        // dQ += dS K (scale applied at the end).
#pragma unroll 4
        for (int c = 0; c < BN; ++c) fma_step<1, LD1>(dSs, Kt, c, tx, ty, dq);
    }

    store_rows(h, q0, tokens, tx, ty, 0, dq, scale);
}

template <typename T> __device__ void attention_bwd_dkdv_hd32_impl BWD_PARAMS(T) { attention_bwd_dkdv<T, 32> BWD_ARGS; }
template <typename T> __device__ void attention_bwd_dkdv_hd64_impl BWD_PARAMS(T) { attention_bwd_dkdv<T, 64> BWD_ARGS; }
template <typename T> __device__ void attention_bwd_dq_hd32_impl BWD_PARAMS(T) { attention_bwd_dq<T, 32> BWD_ARGS; }
template <typename T> __device__ void attention_bwd_dq_hd64_impl BWD_PARAMS(T) { attention_bwd_dq<T, 64> BWD_ARGS; }
EXPORT_F32_BF16(attention_bwd_dkdv_hd32, BWD_PARAMS, BWD_ARGS)
EXPORT_F32_BF16(attention_bwd_dkdv_hd64, BWD_PARAMS, BWD_ARGS)
EXPORT_F32_BF16(attention_bwd_dq_hd32, BWD_PARAMS, BWD_ARGS)
EXPORT_F32_BF16(attention_bwd_dq_hd64, BWD_PARAMS, BWD_ARGS)

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

__device__ __forceinline__ unsigned dynamic_smem_bytes() {
    unsigned r;
    asm volatile("mov.u32 %0, %%dynamic_smem_size;" : "=r"(r));
    return r;
}

// A launch with too little shared memory is a bug on the host side: stop
// loudly rather than write past the allocation.
__device__ __forceinline__ void require_smem(int floats) {
    if (dynamic_smem_bytes() < (unsigned)floats * 4u) __trap();
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

} // namespace

// ---- forward ---------------------------------------------------------------

// Shared: Qt[d][r] (Q * scale * log2e, transposed, LD4), Ps[c][r] (this
// tile's probabilities, LD4), Kt[d][c] (LD1), Vs[c][e] (stride D).
template <typename T, int D>
__device__ void attention_fwd(const T* __restrict__ qkv, T* __restrict__ out, float* __restrict__ lse,
                              int tokens, int heads, float scale) {
    static_assert(D % TC == 0 && D <= 128, "head dim");
    constexpr int DC = D / TC; // output columns per thread: tx + 8*j
    require_smem(fwd_smem_floats<D>());
    extern __shared__ float4 attn_smem[];
    float* Qt = reinterpret_cast<float*>(attn_smem);
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
        for (int i = tid; i < BN * D; i += THREADS) {
            const int c = i / D, d = i % D, tok = k0 + c;
            float kv = 0.0f, vv = 0.0f; // padding keys: zeros (p is 0 there, 0 * 0 stays 0)
            if (tok < tokens) {
                kv = ld(base, tok * C3 + D + d);
                vv = ld(base, tok * C3 + 2 * D + d);
            }
            Kt[d * LD1 + c] = kv;
            Vs[c * D + d] = vv;
        }
        __syncthreads();

        float s[TR][TC];
#pragma unroll
        for (int i = 0; i < TR; ++i)
#pragma unroll
            for (int j = 0; j < TC; ++j) s[i][j] = 0.0f;
#pragma unroll 4
        for (int d = 0; d < D; ++d) {
            const float4 a = ld4(&Qt[d * LD4 + ty * TR]);
            const float av[TR] = {a.x, a.y, a.z, a.w};
#pragma unroll
            for (int j = 0; j < TC; ++j) {
                const float b = Kt[d * LD1 + tx + 8 * j];
#pragma unroll
                for (int i = 0; i < TR; ++i) s[i][j] = fmaf(av[i], b, s[i][j]);
            }
        }

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
        for (int c = 0; c < BN; ++c) {
            const float4 p = ld4(&Ps[c * LD4 + ty * TR]);
            const float pv[TR] = {p.x, p.y, p.z, p.w};
#pragma unroll
            for (int j = 0; j < DC; ++j) {
                const float v = Vs[c * D + tx + 8 * j];
#pragma unroll
                for (int i = 0; i < TR; ++i) o[i][j] = fmaf(pv[i], v, o[i][j]);
            }
        }
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

#define FWD_PARAMS(T) (const T* qkv, T* out, float* lse, int tokens, int heads, float scale)
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

// ---- backward: dK, dV (one CTA per key tile) -----------------------------

// Thread: keys ty*4+i of the tile (rows of S^T), queries tx+8*j (columns).
// Shared: Kt[d][c] (K * scale * log2e, LD4), Vt[d][c] (LD4), Pt[r][c] and
// dSt[r][c] (this query tile's P and dS, LD4), Qt[d][r] and dOt[d][r] (LD1),
// then lse (base 2) and delta of the query tile.
template <typename T, int D>
__device__ void attention_bwd_dkdv(const T* __restrict__ qkv, const T* __restrict__ dy,
                                   const float* __restrict__ lse, const float* __restrict__ delta,
                                   T* __restrict__ dqkv, int tokens, int heads, float scale) {
    static_assert(D % TC == 0 && D <= 128, "head dim");
    constexpr int DC = D / TC;
    require_smem(dkdv_smem_floats<D>());
    extern __shared__ float4 attn_smem[];
    float* Kt = reinterpret_cast<float*>(attn_smem);
    float* Vt = Kt + D * LD4;
    float* Pt = Vt + D * LD4;
    float* dSt = Pt + BM * LD4;
    float* Qt = dSt + BM * LD4;
    float* dOt = Qt + D * LD1;
    float* Ls = dOt + D * LD1;
    float* Ds = Ls + BM;

    const int tid = threadIdx.x, tx = tid & 7, ty = tid >> 3;
    const int k0 = blockIdx.x * BN, head = blockIdx.y, img = blockIdx.z;
    const long C = (long)heads * D, C3 = 3 * C;
    const T* base = qkv + (long)img * tokens * C3 + (long)head * 3 * D;
    const T* dyb = dy + (long)img * tokens * C + (long)head * D;
    const float* lseb = lse + ((long)img * heads + head) * tokens;
    const float* delb = delta + ((long)img * heads + head) * tokens;
    const float kscale = scale * LOG2E;

    for (int i = tid; i < BN * D; i += THREADS) {
        const int c = i / D, d = i % D, tok = k0 + c;
        float kv = 0.0f, vv = 0.0f;
        if (tok < tokens) {
            kv = ld(base, tok * C3 + D + d) * kscale;
            vv = ld(base, tok * C3 + 2 * D + d);
        }
        Kt[d * LD4 + c] = kv;
        Vt[d * LD4 + c] = vv;
    }

    float dk[TR][DC], dv[TR][DC];
#pragma unroll
    for (int i = 0; i < TR; ++i)
#pragma unroll
        for (int j = 0; j < DC; ++j) dk[i][j] = dv[i][j] = 0.0f;

    for (int q0 = 0; q0 < tokens; q0 += BM) {
        __syncthreads(); // K, V stored; the previous query tile all read
        for (int i = tid; i < BM * D; i += THREADS) {
            const int r = i / D, d = i % D, tok = q0 + r;
            float qv = 0.0f, gv = 0.0f;
            if (tok < tokens) {
                qv = ld(base, tok * C3 + d);
                gv = ld(dyb, tok * C + d);
            }
            Qt[d * LD1 + r] = qv;
            dOt[d * LD1 + r] = gv;
        }
        for (int r = tid; r < BM; r += THREADS) {
            const int tok = q0 + r;
            Ls[r] = tok < tokens ? lseb[tok] * LOG2E : 0.0f;
            Ds[r] = tok < tokens ? delb[tok] : 0.0f;
        }
        __syncthreads();

        float s[TR][TC], dp[TR][TC];
#pragma unroll
        for (int i = 0; i < TR; ++i)
#pragma unroll
            for (int j = 0; j < TC; ++j) s[i][j] = dp[i][j] = 0.0f;
#pragma unroll 2
        for (int d = 0; d < D; ++d) {
            const float4 k4 = ld4(&Kt[d * LD4 + ty * TR]);
            const float4 v4 = ld4(&Vt[d * LD4 + ty * TR]);
            const float kk[TR] = {k4.x, k4.y, k4.z, k4.w};
            const float vv[TR] = {v4.x, v4.y, v4.z, v4.w};
#pragma unroll
            for (int j = 0; j < TC; ++j) {
                const float qv = Qt[d * LD1 + tx + 8 * j];
                const float gv = dOt[d * LD1 + tx + 8 * j];
#pragma unroll
                for (int i = 0; i < TR; ++i) {
                    s[i][j] = fmaf(kk[i], qv, s[i][j]);
                    dp[i][j] = fmaf(vv[i], gv, dp[i][j]);
                }
            }
        }
        // P^T = exp(S^T - lse), dS^T = P^T (dP^T - delta); padding queries: 0.
#pragma unroll
        for (int j = 0; j < TC; ++j) {
            const int r = tx + 8 * j;
            const bool real = q0 + r < tokens;
            const float L = Ls[r], De = Ds[r];
            float p[TR], g[TR];
#pragma unroll
            for (int i = 0; i < TR; ++i) {
                p[i] = real ? exp2f(s[i][j] - L) : 0.0f;
                g[i] = p[i] * (dp[i][j] - De);
            }
            st4(&Pt[r * LD4 + ty * TR], p[0], p[1], p[2], p[3]);
            st4(&dSt[r * LD4 + ty * TR], g[0], g[1], g[2], g[3]);
        }
        __syncthreads();

        // dV += P^T dO, dK += dS^T Q (scale applied at the end).
#pragma unroll 2
        for (int r = 0; r < BM; ++r) {
            const float4 p4 = ld4(&Pt[r * LD4 + ty * TR]);
            const float4 g4 = ld4(&dSt[r * LD4 + ty * TR]);
            const float pv[TR] = {p4.x, p4.y, p4.z, p4.w};
            const float gv[TR] = {g4.x, g4.y, g4.z, g4.w};
#pragma unroll
            for (int j = 0; j < DC; ++j) {
                const int e = tx + 8 * j;
                const float o = dOt[e * LD1 + r];
                const float q = Qt[e * LD1 + r];
#pragma unroll
                for (int i = 0; i < TR; ++i) {
                    dv[i][j] = fmaf(pv[i], o, dv[i][j]);
                    dk[i][j] = fmaf(gv[i], q, dk[i][j]);
                }
            }
        }
    }

#pragma unroll
    for (int i = 0; i < TR; ++i) {
        const int tok = k0 + ty * TR + i;
        if (tok < tokens) {
            T* row = dqkv + ((long)img * tokens + tok) * C3 + (long)head * 3 * D;
#pragma unroll
            for (int j = 0; j < DC; ++j) {
                st(row, D + tx + 8 * j, dk[i][j] * scale);
                st(row, 2 * D + tx + 8 * j, dv[i][j]);
            }
        }
    }
}

// ---- backward: dQ (one CTA per query tile) -------------------------------

// Thread: queries ty*4+i, keys tx+8*j. Shared: Qt[d][r] (Q * scale * log2e,
// LD4), dOt[d][r] (LD4), dSs[c][r] (this key tile's dS, LD4), Kt[d][c] and
// Vt[d][c] (LD1).
template <typename T, int D>
__device__ void attention_bwd_dq(const T* __restrict__ qkv, const T* __restrict__ dy,
                                 const float* __restrict__ lse, const float* __restrict__ delta,
                                 T* __restrict__ dqkv, int tokens, int heads, float scale) {
    static_assert(D % TC == 0 && D <= 128, "head dim");
    constexpr int DC = D / TC;
    require_smem(dq_smem_floats<D>());
    extern __shared__ float4 attn_smem[];
    float* Qt = reinterpret_cast<float*>(attn_smem);
    float* dOt = Qt + D * LD4;
    float* dSs = dOt + D * LD4;
    float* Kt = dSs + BN * LD4;
    float* Vt = Kt + D * LD1;

    const int tid = threadIdx.x, tx = tid & 7, ty = tid >> 3;
    const int q0 = blockIdx.x * BM, head = blockIdx.y, img = blockIdx.z;
    const long C = (long)heads * D, C3 = 3 * C;
    const T* base = qkv + (long)img * tokens * C3 + (long)head * 3 * D;
    const T* dyb = dy + (long)img * tokens * C + (long)head * D;
    const float* lseb = lse + ((long)img * heads + head) * tokens;
    const float* delb = delta + ((long)img * heads + head) * tokens;
    const float qscale = scale * LOG2E;

    for (int i = tid; i < BM * D; i += THREADS) {
        const int r = i / D, d = i % D, tok = q0 + r;
        float qv = 0.0f, gv = 0.0f;
        if (tok < tokens) {
            qv = ld(base, tok * C3 + d) * qscale;
            gv = ld(dyb, tok * C + d);
        }
        Qt[d * LD4 + r] = qv;
        dOt[d * LD4 + r] = gv;
    }
    float L[TR], De[TR], dq[TR][DC];
#pragma unroll
    for (int i = 0; i < TR; ++i) {
        const int tok = q0 + ty * TR + i;
        L[i] = tok < tokens ? lseb[tok] * LOG2E : 0.0f;
        De[i] = tok < tokens ? delb[tok] : 0.0f;
#pragma unroll
        for (int j = 0; j < DC; ++j) dq[i][j] = 0.0f;
    }

    for (int k0 = 0; k0 < tokens; k0 += BN) {
        __syncthreads(); // Q, dO stored; the previous key tile all read
        for (int i = tid; i < BN * D; i += THREADS) {
            const int c = i / D, d = i % D, tok = k0 + c;
            float kv = 0.0f, vv = 0.0f;
            if (tok < tokens) {
                kv = ld(base, tok * C3 + D + d);
                vv = ld(base, tok * C3 + 2 * D + d);
            }
            Kt[d * LD1 + c] = kv;
            Vt[d * LD1 + c] = vv;
        }
        __syncthreads();

        float s[TR][TC], dp[TR][TC];
#pragma unroll
        for (int i = 0; i < TR; ++i)
#pragma unroll
            for (int j = 0; j < TC; ++j) s[i][j] = dp[i][j] = 0.0f;
#pragma unroll 2
        for (int d = 0; d < D; ++d) {
            const float4 q4 = ld4(&Qt[d * LD4 + ty * TR]);
            const float4 g4 = ld4(&dOt[d * LD4 + ty * TR]);
            const float qq[TR] = {q4.x, q4.y, q4.z, q4.w};
            const float gg[TR] = {g4.x, g4.y, g4.z, g4.w};
#pragma unroll
            for (int j = 0; j < TC; ++j) {
                const float kv = Kt[d * LD1 + tx + 8 * j];
                const float vv = Vt[d * LD1 + tx + 8 * j];
#pragma unroll
                for (int i = 0; i < TR; ++i) {
                    s[i][j] = fmaf(qq[i], kv, s[i][j]);
                    dp[i][j] = fmaf(gg[i], vv, dp[i][j]);
                }
            }
        }
        // dS = P (dP - delta), P = exp(S - lse); padding keys: 0.
#pragma unroll
        for (int j = 0; j < TC; ++j) {
            const int c = tx + 8 * j;
            const bool real = k0 + c < tokens;
            float g[TR];
#pragma unroll
            for (int i = 0; i < TR; ++i) {
                const float p = real ? exp2f(s[i][j] - L[i]) : 0.0f;
                g[i] = p * (dp[i][j] - De[i]);
            }
            st4(&dSs[c * LD4 + ty * TR], g[0], g[1], g[2], g[3]);
        }
        __syncthreads();

        // dQ += dS K (scale applied at the end).
#pragma unroll 4
        for (int c = 0; c < BN; ++c) {
            const float4 g4 = ld4(&dSs[c * LD4 + ty * TR]);
            const float gv[TR] = {g4.x, g4.y, g4.z, g4.w};
#pragma unroll
            for (int j = 0; j < DC; ++j) {
                const float kv = Kt[(tx + 8 * j) * LD1 + c];
#pragma unroll
                for (int i = 0; i < TR; ++i) dq[i][j] = fmaf(gv[i], kv, dq[i][j]);
            }
        }
    }

#pragma unroll
    for (int i = 0; i < TR; ++i) {
        const int tok = q0 + ty * TR + i;
        if (tok < tokens) {
            T* row = dqkv + ((long)img * tokens + tok) * C3 + (long)head * 3 * D;
#pragma unroll
            for (int j = 0; j < DC; ++j) st(row, tx + 8 * j, dq[i][j] * scale);
        }
    }
}

#define BWD_PARAMS(T) \
    (const T* qkv, const T* dy, const float* lse, const float* delta, T* dqkv, int tokens, int heads, float scale)
#define BWD_ARGS (qkv, dy, lse, delta, dqkv, tokens, heads, scale)
template <typename T> __device__ void attention_bwd_dkdv_hd32_impl BWD_PARAMS(T) { attention_bwd_dkdv<T, 32> BWD_ARGS; }
template <typename T> __device__ void attention_bwd_dkdv_hd64_impl BWD_PARAMS(T) { attention_bwd_dkdv<T, 64> BWD_ARGS; }
template <typename T> __device__ void attention_bwd_dq_hd32_impl BWD_PARAMS(T) { attention_bwd_dq<T, 32> BWD_ARGS; }
template <typename T> __device__ void attention_bwd_dq_hd64_impl BWD_PARAMS(T) { attention_bwd_dq<T, 64> BWD_ARGS; }
EXPORT_F32_BF16(attention_bwd_dkdv_hd32, BWD_PARAMS, BWD_ARGS)
EXPORT_F32_BF16(attention_bwd_dkdv_hd64, BWD_PARAMS, BWD_ARGS)
EXPORT_F32_BF16(attention_bwd_dq_hd32, BWD_PARAMS, BWD_ARGS)
EXPORT_F32_BF16(attention_bwd_dq_hd64, BWD_PARAMS, BWD_ARGS)

// Group normalisation (ADM's GroupNorm32) with an optional fused SiLU, and
// its backward; twins of src/cpu/norm.rs.
//
// Layout: x, y, dy, dx NHWC [n, hw, c] (hw = h*w pixels), gamma and beta [c];
// group g of an image is channels g*cg .. (g+1)*cg (cg = c/groups) of every
// pixel. Statistics per (image, group): biased variance, eps 1e-5, in f32;
// saved as stats [n, groups, 2] = (mean, rstd) for the backward.
//
// Split reduction: every kernel but one runs on a grid (splits, n): CTA
// (s, i) owns pixels [s*pps, min((s+1)*pps, hw)) of image i, all channels, so
// its loads are whole contiguous pixel rows and each (image, group) reduction
// is spread over `splits` CTAs. The wrapper (src/cuda/norm.rs, `split`)
// picks splits = clamp(min(ceil(512 / n), hw*c / 4096), ceil(hw / 4096), hw):
// enough CTAs to fill the GPU at small batch (512, about 4 per SM on a
// 132-SM H100), at least 4096 elements per CTA, at most 4096 pixels per CTA
// (bounds the serial f32 sums of one thread), then pps = ceil(hw / splits).
//
// Threads of a 256-thread CTA: when c <= 256, thread t owns channel t % c of
// every P-th pixel (P = 256 / c pixel lanes, lane t / c; threads past P*c
// idle); when c > 256, thread t owns channels t, t+256, ... of every pixel.
// A warp thus reads consecutive addresses.
//
// Forward (2 launches):
//   group_norm_stats  (splits, n): per thread, shifted sums of its channel
//     (shift = its first value) -> (count, mean, M2); Chan-merged per group
//     in shared memory (warp per group, fixed tree) -> f32 workspace
//     part [n, splits, groups, 3].
//   group_norm_apply  (splits, n): each CTA Chan-merges the `splits` partials
//     of its image's groups (same fixed order in every CTA), CTAs with s = 0
//     write stats, then y = act((x - mean) * rstd * gamma + beta).
// Backward (3 launches), dz = dy through the SiLU (pre-SiLU value recomputed
// from x and the stats), xhat = (x - mean) * rstd:
//   group_norm_bwd_partial (splits, n): per channel sums of dz*xhat and dz
//     over the CTA's pixels -> ws1 [n, splits, c, 2].
//   group_norm_bwd_reduce  (ceil(c/32), n+1): rows y < n sum image y's
//     splits -> ws2 [n, c, 2]; row y = n sums all (image, split) rows ->
//     dgamma, dbeta (stored in gamma's type).
//   group_norm_bwd_apply   (splits, n): per group A = sum(gamma*dz)/count,
//     B = sum(gamma*dz*xhat)/count from ws2; dx = rstd*(dz*gamma - A - xhat*B).
// Every reduction is a fixed-order tree or loop (no atomics), so results
// are deterministic run to run.
//
// Numbers: not yet measured on a GPU (memory-bound: the forward reads x
// twice and writes y once, the backward reads x and dy twice, writes dx).
#include "common.cuh"

#define GN_EPS 1e-5f

// Partial statistics of a set of values: count, mean, sum of squared
// deviations from the mean.
struct Moments {
    float n, mean, m2;
};

// a <- a merged with (nb, mb, Mb) (Chan et al.); empty sides are skipped.
__device__ __forceinline__ void merge(Moments& a, float nb, float mb, float Mb) {
    if (nb == 0.0f) return;
    if (a.n == 0.0f) {
        a.n = nb;
        a.mean = mb;
        a.m2 = Mb;
        return;
    }
    float n = a.n + nb;
    float d = mb - a.mean;
    float fb = nb / n;
    a.mean += d * fb;
    a.m2 += Mb + d * d * (a.n * fb);
    a.n = n;
}

// Smallest power of two >= min(k, 32), at least 1: the lanes a warp tree
// must span when lanes >= k hold nothing.
__device__ __forceinline__ int tree_width(int k) {
    int w = 1;
    while (w < k && w < 32) w <<= 1;
    return w;
}

// Merges lanes 0..width-1 into lane 0, in a fixed tree. Every lane of the
// warp must call it with the same width; only lane 0's result is meaningful.
__device__ __forceinline__ void warp_merge(Moments& a, int width) {
    for (int o = width >> 1; o > 0; o >>= 1) {
        float nb = __shfl_down_sync(0xffffffffu, a.n, o);
        float mb = __shfl_down_sync(0xffffffffu, a.mean, o);
        float Mb = __shfl_down_sync(0xffffffffu, a.m2, o);
        merge(a, nb, mb, Mb);
    }
}

// Which channel and pixel lane this thread owns (see the note at the top).
struct Lanes {
    int P;   // pixel lanes
    int pl;  // this thread's pixel lane (< P when active)
    int cl;  // this thread's channel within a 256-channel chunk
};

__device__ __forceinline__ Lanes lanes_of(int c) {
    int T = blockDim.x, t = threadIdx.x;
    Lanes L;
    if (c <= T) {
        L.P = T / c;
        L.pl = t / c;
        L.cl = t % c;
    } else {
        L.P = 1;
        L.pl = 0;
        L.cl = t;
    }
    return L;
}

// f(ch) for each channel ch this thread owns (lanes L, the note at the top).
template <typename F> __device__ __forceinline__ void for_each_channel(const Lanes& L, int c, F f) {
    for (int ch0 = 0; ch0 < c; ch0 += blockDim.x) {
        const int ch = ch0 + L.cl;
        if (L.pl < L.P && ch < c) f(ch);
    }
}

// f(i) for each pixel of channel ch that this thread owns, i the element's
// index in x (and dy, y, dx): CTA (split, img) = (blockIdx.x, blockIdx.y)
// owns pixels [p0, p1) of image img, the thread p0 + L.pl and every L.P-th
// pixel after it.
template <typename F>
__device__ __forceinline__ void for_each_pixel(int hw, int c, int pps, const Lanes& L, int ch, F f) {
    const long p0 = (long)blockIdx.x * pps;
    const long p1 = min(p0 + pps, (long)hw);
    const long base = (long)blockIdx.y * hw * c;
#pragma unroll 4
    for (long p = p0 + L.pl; p < p1; p += L.P) f(base + p * c + ch);
}

// Merges item(k) for k < count over a warp (lane l takes k = l, l+32, ...
// in order, then a fixed tree); only lane 0's result is meaningful.
template <typename F> __device__ __forceinline__ Moments warp_moments(int count, int width, F item) {
    Moments a = {0.0f, 0.0f, 0.0f};
    for (int k = threadIdx.x & 31; k < count; k += 32) {
        const Moments b = item(k);
        merge(a, b.n, b.mean, b.m2);
    }
    warp_merge(a, width);
    return a;
}

__device__ __forceinline__ float sigmoid_f(float z) { return 1.0f / (1.0f + __expf(-z)); }

// dL/dz for z = xhat*gamma + beta followed (or not) by SiLU.
__device__ __forceinline__ float pre_act_grad(float dyv, float xhat, float ga, float be, int silu) {
    if (!silu) return dyv;
    float z = xhat * ga + be;
    float s = sigmoid_f(z);
    return dyv * s * (1.0f + z * (1.0f - s));
}

// ---- forward ---------------------------------------------------------------

// Grid (splits, n). Dynamic shared memory: 3 * P * c floats.
template <typename T>
__device__ void group_norm_stats_impl(const T* x, float* part, int hw, int c, int groups, int pps) {
    extern __shared__ float smem[];
    const int img = blockIdx.y, split = blockIdx.x, splits = gridDim.x;
    const int T_ = blockDim.x;
    const Lanes L = lanes_of(c);
    const int slots = L.P * c;
    float* sn = smem;
    float* smean = smem + slots;
    float* sm2 = smem + 2 * slots;
    const long p0 = (long)split * pps;
    const long p1 = min(p0 + pps, (long)hw);
    const T* xi = x + (long)img * hw * c;

    for_each_channel(L, c, [&](int ch) {
        long p = p0 + L.pl;
        float shift = p < p1 ? ld(xi, p * c + ch) : 0.0f;
        float s = 0.0f, q = 0.0f, cnt = 0.0f;
#pragma unroll 4
        for (; p < p1; p += L.P) {
            float d = ld(xi, p * c + ch) - shift;
            s += d;
            q += d * d;
            cnt += 1.0f;
        }
        int slot = L.pl * c + ch;
        sn[slot] = cnt;
        smean[slot] = cnt > 0.0f ? shift + s / cnt : 0.0f;
        sm2[slot] = cnt > 0.0f ? fmaxf(q - s * (s / cnt), 0.0f) : 0.0f;
    });
    __syncthreads();

    // Warp per group: lanes take the group's slots k = lane, lane+32, ...
    // (slot of k: pixel lane k / cg, channel g*cg + k % cg), then a tree.
    const int cg = c / groups, lane = threadIdx.x & 31, warps = T_ >> 5;
    const int per_group = L.P * cg;
    const int width = tree_width(per_group);
    for (int g = threadIdx.x >> 5; g < groups; g += warps) {
        const Moments a = warp_moments(per_group, width, [&](int k) {
            int slot = (k / cg) * c + g * cg + k % cg;
            return Moments{sn[slot], smean[slot], sm2[slot]};
        });
        if (lane == 0) {
            float* o = part + (((long)img * splits + split) * groups + g) * 3;
            o[0] = a.n;
            o[1] = a.mean;
            o[2] = a.m2;
        }
    }
}
#define GN_STATS_PARAMS(T) (const T* x, float* part, int hw, int c, int groups, int pps)
EXPORT_F32_BF16(group_norm_stats, GN_STATS_PARAMS, (x, part, hw, c, groups, pps))

// Grid (splits, n), the same as group_norm_stats. Dynamic shared memory:
// 2 * groups floats.
template <typename T>
__device__ void group_norm_apply_impl(const T* x, const T* gamma, const T* beta, const float* part, T* y,
                                      float* stats, int hw, int c, int groups, int pps, int silu) {
    extern __shared__ float smem[];
    float* smean = smem;
    float* srstd = smem + groups;
    const int img = blockIdx.y, split = blockIdx.x, splits = gridDim.x;
    const int T_ = blockDim.x, lane = threadIdx.x & 31, warps = T_ >> 5;

    // Statistics of this image's groups: warp per group, lanes over splits.
    const int width = tree_width(splits);
    for (int g = threadIdx.x >> 5; g < groups; g += warps) {
        const Moments a = warp_moments(splits, width, [&](int s) {
            const float* p = part + (((long)img * splits + s) * groups + g) * 3;
            return Moments{p[0], p[1], p[2]};
        });
        if (lane == 0) {
            float var = a.n > 0.0f ? fmaxf(a.m2 / a.n, 0.0f) : 0.0f;
            float rstd = 1.0f / sqrtf(var + GN_EPS);
            smean[g] = a.mean;
            srstd[g] = rstd;
            if (split == 0) {
                stats[((long)img * groups + g) * 2] = a.mean;
                stats[((long)img * groups + g) * 2 + 1] = rstd;
            }
        }
    }
    __syncthreads();

    const Lanes L = lanes_of(c);
    const int cg = c / groups;
    for_each_channel(L, c, [&](int ch) {
        const float m = smean[ch / cg], r = srstd[ch / cg];
        const float ga = ld(gamma, ch), be = ld(beta, ch);
        for_each_pixel(hw, c, pps, L, ch, [&](long i) {
            float z = (ld(x, i) - m) * r * ga + be;
            st(y, i, silu ? z * sigmoid_f(z) : z);
        });
    });
}
#define GN_APPLY_PARAMS(T)                                                                                   \
    (const T* x, const T* gamma, const T* beta, const float* part, T* y, float* stats, int hw, int c, int groups, \
     int pps, int silu)
EXPORT_F32_BF16(group_norm_apply, GN_APPLY_PARAMS, (x, gamma, beta, part, y, stats, hw, c, groups, pps, silu))

// ---- backward --------------------------------------------------------------

// Grid (splits, n). Dynamic shared memory: 2 * P * c floats. ws1[i, s, ch]
// = (sum dz*xhat, sum dz) over the CTA's pixels.
template <typename T>
__device__ void group_norm_bwd_partial_impl(const T* x, const T* dy, const T* gamma, const T* beta,
                                            const float* stats, float* ws1, int hw, int c, int groups, int pps,
                                            int silu) {
    extern __shared__ float smem[];
    const int img = blockIdx.y, split = blockIdx.x, splits = gridDim.x;
    const int T_ = blockDim.x;
    const Lanes L = lanes_of(c);
    const int slots = L.P * c;
    float* sxh = smem;
    float* sdz = smem + slots;
    const int cg = c / groups;

    for_each_channel(L, c, [&](int ch) {
        const int g = ch / cg;
        const float m = stats[((long)img * groups + g) * 2], r = stats[((long)img * groups + g) * 2 + 1];
        const float ga = ld(gamma, ch), be = ld(beta, ch);
        float sum_xh = 0.0f, sum_dz = 0.0f;
        for_each_pixel(hw, c, pps, L, ch, [&](long i) {
            float xhat = (ld(x, i) - m) * r;
            float dz = pre_act_grad(ld(dy, i), xhat, ga, be, silu);
            sum_xh += dz * xhat;
            sum_dz += dz;
        });
        int slot = L.pl * c + ch;
        sxh[slot] = sum_xh;
        sdz[slot] = sum_dz;
    });
    __syncthreads();

    for (int ch = threadIdx.x; ch < c; ch += T_) {
        float a = 0.0f, b = 0.0f;
        for (int pl = 0; pl < L.P; ++pl) {
            a += sxh[pl * c + ch];
            b += sdz[pl * c + ch];
        }
        float2* o = reinterpret_cast<float2*>(ws1) + ((long)img * splits + split) * c + ch;
        *o = make_float2(a, b);
    }
}
#define GN_BWD_PARTIAL_PARAMS(T)                                                                     \
    (const T* x, const T* dy, const T* gamma, const T* beta, const float* stats, float* ws1, int hw, int c, \
     int groups, int pps, int silu)
EXPORT_F32_BF16(group_norm_bwd_partial, GN_BWD_PARTIAL_PARAMS,
                (x, dy, gamma, beta, stats, ws1, hw, c, groups, pps, silu))

// Grid (ceil(c/32), n+1), 256 threads (8 warps x 32 channels). Row y < n:
// ws2[y, ch] = sum over splits of ws1[y, s, ch]. Row y = n: dgamma[ch],
// dbeta[ch] = sum over all (image, split) rows, stored in f32 whatever the
// activations' type (the optimizer's f32 master weights take them
// unrounded).
extern "C" __global__ void group_norm_bwd_reduce(const float* ws1, float* ws2, float* dgamma, float* dbeta, int n,
                                                 int splits, int c) {
    __shared__ float2 acc[32][33];  // [warp][lane], up to 32 warps
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const int ch = blockIdx.x * 32 + lane;
    const int y = blockIdx.y;
    const float2* w1 = reinterpret_cast<const float2*>(ws1);
    // Rows [r0, r1) of ws1 viewed as [n*splits, c].
    const long r0 = y < n ? (long)y * splits : 0;
    const long r1 = y < n ? r0 + splits : (long)n * splits;
    float a = 0.0f, b = 0.0f;
    if (ch < c) {
#pragma unroll 4
        for (long r = r0 + warp; r < r1; r += warps) {
            float2 v = w1[r * c + ch];
            a += v.x;
            b += v.y;
        }
    }
    acc[warp][lane] = make_float2(a, b);
    __syncthreads();
    if (warp == 0 && ch < c) {
        a = 0.0f;
        b = 0.0f;
        for (int w = 0; w < warps; ++w) {
            a += acc[w][lane].x;
            b += acc[w][lane].y;
        }
        if (y < n) {
            reinterpret_cast<float2*>(ws2)[(long)y * c + ch] = make_float2(a, b);
        } else {
            dgamma[ch] = a;
            dbeta[ch] = b;
        }
    }
}

// Grid (splits, n). Dynamic shared memory: 4 * groups floats.
template <typename T>
__device__ void group_norm_bwd_apply_impl(const T* x, const T* dy, const T* gamma, const T* beta,
                                          const float* stats, const float* ws2, T* dx, int hw, int c, int groups,
                                          int pps, int silu) {
    extern __shared__ float smem[];
    float* smean = smem;
    float* srstd = smem + groups;
    float* sA = smem + 2 * groups;  // mean over the group of dz*gamma
    float* sB = smem + 3 * groups;  // mean over the group of dz*gamma*xhat
    const int img = blockIdx.y;
    const int T_ = blockDim.x, lane = threadIdx.x & 31, warps = T_ >> 5;
    const int cg = c / groups;
    const float inv_count = 1.0f / ((float)hw * (float)cg);
    const float2* w2 = reinterpret_cast<const float2*>(ws2) + (long)img * c;

    for (int g = threadIdx.x >> 5; g < groups; g += warps) {
        float a = 0.0f, b = 0.0f;
        for (int j = lane; j < cg; j += 32) {
            int ch = g * cg + j;
            float ga = ld(gamma, ch);
            float2 v = w2[ch];
            b += v.x * ga;
            a += v.y * ga;
        }
        a = warp_sum(a);
        b = warp_sum(b);
        if (lane == 0) {
            sA[g] = a * inv_count;
            sB[g] = b * inv_count;
            smean[g] = stats[((long)img * groups + g) * 2];
            srstd[g] = stats[((long)img * groups + g) * 2 + 1];
        }
    }
    __syncthreads();

    const Lanes L = lanes_of(c);
    for_each_channel(L, c, [&](int ch) {
        const int g = ch / cg;
        const float m = smean[g], r = srstd[g], A = sA[g], B = sB[g];
        const float ga = ld(gamma, ch), be = ld(beta, ch);
        for_each_pixel(hw, c, pps, L, ch, [&](long i) {
            float xhat = (ld(x, i) - m) * r;
            float dz = pre_act_grad(ld(dy, i), xhat, ga, be, silu);
            st(dx, i, r * (dz * ga - A - xhat * B));
        });
    });
}
#define GN_BWD_APPLY_PARAMS(T)                                                                             \
    (const T* x, const T* dy, const T* gamma, const T* beta, const float* stats, const float* ws2, T* dx, int hw, \
     int c, int groups, int pps, int silu)
EXPORT_F32_BF16(group_norm_bwd_apply, GN_BWD_APPLY_PARAMS,
                (x, dy, gamma, beta, stats, ws2, dx, hw, c, groups, pps, silu))

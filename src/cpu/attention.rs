//! Multi-head self-attention over the pixels of an image (ADM's
//! QKVAttentionLegacy).
//!
//! Layout: `qkv` is `[n, h, w, 3c]`, the output of the block's qkv
//! projection; the pixels are the T = h*w tokens. With `heads = c / head_dim`,
//! head j reads channels `3*head_dim*j ..` of each pixel as
//! `[q (head_dim), k (head_dim), v (head_dim)]` (the legacy order, so ADM
//! checkpoints map over unchanged) and writes channels
//! `head_dim*j .. head_dim*(j+1)` of the `[n, h, w, c]` output.
//! `out = softmax(q k^T / sqrt(head_dim)) v`.
//!
//! Fast path: K^T and V of every (image, head) are packed once for the
//! GEMM; then one rayon task per block of QUERY_BLOCK query rows of an image
//! runs, per head, `S = Q K^T` into a block of scores, the row softmax, and
//! `O = P V` straight into the output's channels. A block of scores (48 x T)
//! stays in L2, so the T^2 probabilities touch memory only when the backward
//! needs them kept (training); inference keeps none. The backward: per
//! (image, head), four GEMMs over the kept probabilities.
//! A flash-style kernel is the GPU's business.

use super::gemm::{matmul, matmul_packed, Mat, PackedB};
use super::math::{self, multiversion};
use super::with_scratch;
use super::zeros;
use crate::tensor::Tensor;
use rayon::prelude::*;

/// The shape of one attention call (shared with the CUDA twin).
pub(crate) struct Geometry {
    pub n: usize,
    pub tokens: usize,
    pub c: usize,
    pub heads: usize,
    pub hd: usize,
    pub scale: f32,
}

pub(crate) fn geometry(qkv: &Tensor, head_dim: usize) -> Geometry {
    let (n, h, w, c3) = qkv.nhwc();
    assert!(head_dim > 0, "attention with head_dim 0");
    assert!(
        c3 % 3 == 0 && (c3 / 3) % head_dim == 0,
        "qkv with {c3} channels does not split into heads of {head_dim}"
    );
    let c = c3 / 3;
    Geometry {
        n,
        tokens: h * w,
        c,
        heads: c / head_dim,
        hd: head_dim,
        scale: 1.0 / (head_dim as f32).sqrt(),
    }
}

/// Runs `job` for every (image, head): one rayon task each when there are
/// enough of them to fill the pool, else one after the other so that each
/// job's products are threaded (a single 1-head image at 96x96 is two
/// 9216x9216x64 GEMMs that must not run on one core).
fn over_heads<T: Send>(jobs: usize, job: impl Fn(usize) -> T + Sync + Send) -> Vec<T> {
    if jobs >= rayon::current_num_threads() {
        (0..jobs).into_par_iter().map(&job).collect()
    } else {
        (0..jobs).map(job).collect()
    }
}

/// Softmax probabilities of every (image, head), `[T, T]` each, row-major.
pub struct AttentionProbs(Vec<Vec<f32>>);

impl AttentionProbs {
    /// How many probabilities it keeps (T^2 per image and head).
    pub fn values(&self) -> usize {
        self.0.iter().map(Vec::len).sum()
    }
}

/// Query rows per forward task: a multiple of every GEMM kernel's tile rows.
const QUERY_BLOCK: usize = 48;

multiversion! {
/// `softmax(scale * row)` for each row (`cols` wide, `stride` apart). The
/// max and the sum run over 16 lanes so they vectorise (a single f32
/// accumulator cannot be reordered).
fn softmax_rows(s: &mut [f32], cols: usize, stride: usize, scale: f32) {
    const LANES: usize = 16;
    for row in s.chunks_mut(stride) {
        let row = &mut row[..cols];
        let mut lane_max = [f32::NEG_INFINITY; LANES];
        let (body, tail) = row.split_at(row.len() / LANES * LANES);
        for chunk in body.chunks_exact(LANES) {
            for (m, &v) in lane_max.iter_mut().zip(chunk) {
                *m = m.max(v);
            }
        }
        let max = tail.iter().chain(&lane_max).copied().fold(f32::NEG_INFINITY, f32::max);
        for v in row.iter_mut() {
            *v = math::exp((*v - max) * scale);
        }
        let mut lane_sum = [0.0f32; LANES];
        let (body, tail) = row.split_at(row.len() / LANES * LANES);
        for chunk in body.chunks_exact(LANES) {
            for (s, &v) in lane_sum.iter_mut().zip(chunk) {
                *s += v;
            }
        }
        let inv = 1.0 / (lane_sum.iter().sum::<f32>() + tail.iter().sum::<f32>());
        row.iter_mut().for_each(|v| *v *= inv);
    }
}
}

/// Copies a per-head `[T, width]` block into channels `offset..` of a
/// `[T, row_len]` image.
fn scatter_head(block: &[f32], width: usize, dst: &mut [f32], row_len: usize, offset: usize) {
    for (src, row) in block.chunks(width).zip(dst.chunks_mut(row_len)) {
        row[offset..offset + width].copy_from_slice(src);
    }
}

/// The output, and the probabilities when `keep_probs` (for the backward).
pub fn attention(
    qkv: &Tensor,
    head_dim: usize,
    keep_probs: bool,
) -> (Tensor, Option<AttentionProbs>) {
    let g = geometry(qkv, head_dim);
    let (t, hd, c, c3) = (g.tokens, g.hd, g.c, 3 * g.c);
    let qd = qkv.data();
    let head_view = |img: usize, head: usize, part: usize, rows: std::ops::Range<usize>| {
        let start = (img * t + rows.start) * c3 + head * 3 * hd + part * hd;
        Mat::strided(&qd[start..], rows.len(), hd, c3, 1)
    };
    // K^T and V of each (image, head), packed once for every query block.
    let packed: Vec<(PackedB, PackedB)> = (0..g.n * g.heads)
        .map(|job| {
            let (img, head) = (job / g.heads, job % g.heads);
            (
                PackedB::new(head_view(img, head, 1, 0..t).t()),
                PackedB::new(head_view(img, head, 2, 0..t)),
            )
        })
        .collect();
    let mut out = zeros(g.n * t * c);
    let mut probs: Vec<Vec<f32>> = if keep_probs {
        vec![vec![0.0; t * t]; g.n * g.heads]
    } else {
        Vec::new()
    };
    // One task per (image, query block): its output rows, and its rows of
    // every head's probabilities when they are kept.
    let mut prob_blocks: Vec<Vec<&mut [f32]>> = (0..g.n * t.div_ceil(QUERY_BLOCK))
        .map(|_| Vec::new())
        .collect();
    for (job, p) in probs.iter_mut().enumerate() {
        let img = job / g.heads;
        for (b, rows) in p.chunks_mut(QUERY_BLOCK * t).enumerate() {
            prob_blocks[img * t.div_ceil(QUERY_BLOCK) + b].push(rows);
        }
    }
    let tasks: Vec<_> = out
        .chunks_mut(t * c)
        .enumerate()
        .flat_map(|(img, image)| {
            image
                .chunks_mut(QUERY_BLOCK * c)
                .enumerate()
                .map(move |(b, rows)| (img, b * QUERY_BLOCK, rows))
        })
        .zip(prob_blocks)
        .collect();
    tasks
        .into_par_iter()
        .for_each(|((img, q0, out_rows), mut kept)| {
            let rows = out_rows.len() / c;
            // Unkept scores get a padded row stride (4 KB-multiple strides
            // alias in L1 when the GEMM reads the rows in step).
            let stride = if kept.is_empty() { t + 16 } else { t };
            let scratch_len = if kept.is_empty() { rows * stride } else { 0 };
            with_scratch(scratch_len, |scratch| {
                for head in 0..g.heads {
                    let (k_t, v) = &packed[img * g.heads + head];
                    let s = match kept.get_mut(head) {
                        Some(block) => &mut block[..],
                        None => &mut scratch[..],
                    };
                    let q = head_view(img, head, 0, q0..q0 + rows);
                    matmul_packed(&q, k_t, s, stride, false);
                    softmax_rows(s, t, stride, g.scale);
                    let o = &mut out_rows[head * hd..];
                    let p = Mat::strided(s, rows, t, stride, 1);
                    matmul_packed(&p, v, o, c, false);
                }
            })
        });
    let mut shape = qkv.shape().to_vec();
    shape[3] = c;
    let probs = keep_probs.then_some(AttentionProbs(probs));
    (Tensor::from_vec(&shape, out), probs)
}

pub fn attention_backward(
    qkv: &Tensor,
    probs: &AttentionProbs,
    dy: &Tensor,
    head_dim: usize,
) -> Tensor {
    let g = geometry(qkv, head_dim);
    let (t, hd, c3) = (g.tokens, g.hd, 3 * g.c);
    let (qd, dyd) = (qkv.data(), dy.data());
    let per_head: Vec<Vec<f32>> = over_heads(g.n * g.heads, |job| {
        let (img, head) = (job / g.heads, job % g.heads);
        let base = &qd[img * t * c3 + head * 3 * hd..];
        let q = Mat::strided(base, t, hd, c3, 1);
        let k = Mat::strided(&base[hd..], t, hd, c3, 1);
        let v = Mat::strided(&base[2 * hd..], t, hd, c3, 1);
        let d_out = Mat::strided(&dyd[img * t * g.c + head * hd..], t, hd, g.c, 1);
        let p = &probs.0[job];
        // dqkv block per token: [dq, dk, dv], 3*hd wide.
        let mut dblock = zeros(t * 3 * hd);
        matmul(
            Mat::rows(p, t, t).t(),
            d_out,
            &mut dblock[2 * hd..],
            3 * hd,
            false,
        );
        let mut ds = zeros(t * t);
        matmul(d_out, v.t(), &mut ds, t, false);
        for (ds_row, p_row) in ds.chunks_mut(t).zip(p.chunks(t)) {
            let dot: f32 = ds_row.iter().zip(p_row).map(|(a, b)| a * b).sum();
            for (d, &pv) in ds_row.iter_mut().zip(p_row) {
                *d = g.scale * pv * (*d - dot);
            }
        }
        let ds_mat = Mat::rows(&ds, t, t);
        matmul(ds_mat, k, &mut dblock, 3 * hd, false);
        matmul(ds_mat.t(), q, &mut dblock[hd..], 3 * hd, false);
        dblock
    });
    let mut dqkv = zeros(qkv.numel());
    for (job, block) in per_head.iter().enumerate() {
        let (img, head) = (job / g.heads, job % g.heads);
        scatter_head(block, 3 * hd, &mut dqkv[img * t * c3..], c3, head * 3 * hd);
    }
    Tensor::from_vec(qkv.shape(), dqkv)
}

/// The definition, loop by loop, in f64.
pub fn attention_reference(qkv: &Tensor, head_dim: usize) -> Tensor {
    let g = geometry(qkv, head_dim);
    let (t, hd, c3) = (g.tokens, g.hd, 3 * g.c);
    let qd = qkv.data();
    let at = |img: usize, tok: usize, ch: usize| qd[(img * t + tok) * c3 + ch] as f64;
    let mut out = zeros(g.n * t * g.c);
    for img in 0..g.n {
        for head in 0..g.heads {
            let (qo, ko, vo) = (head * 3 * hd, head * 3 * hd + hd, head * 3 * hd + 2 * hd);
            for i in 0..t {
                let scores: Vec<f64> = (0..t)
                    .map(|j| {
                        (0..hd)
                            .map(|d| at(img, i, qo + d) * at(img, j, ko + d))
                            .sum::<f64>()
                            * g.scale as f64
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = weights.iter().sum();
                for d in 0..hd {
                    let o: f64 = (0..t).map(|j| weights[j] * at(img, j, vo + d)).sum();
                    out[(img * t + i) * g.c + head * hd + d] = (o / total) as f32;
                }
            }
        }
    }
    let mut shape = qkv.shape().to_vec();
    shape[3] = g.c;
    Tensor::from_vec(&shape, out)
}

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
//! Fast path: one rayon task per (image, head), each two GEMMs on strided
//! views of `qkv` and a row softmax; the probabilities are kept for the
//! backward (T^2 floats per head: fine at the U-Net's attention
//! resolutions, a flash-style kernel is the GPU's business).

use super::gemm::{matmul, Mat};
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

fn softmax_rows(s: &mut [f32], cols: usize) {
    for row in s.chunks_mut(cols) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

/// Copies a per-head `[T, width]` block into channels `offset..` of a
/// `[T, row_len]` image.
fn scatter_head(block: &[f32], width: usize, dst: &mut [f32], row_len: usize, offset: usize) {
    for (src, row) in block.chunks(width).zip(dst.chunks_mut(row_len)) {
        row[offset..offset + width].copy_from_slice(src);
    }
}

pub fn attention(qkv: &Tensor, head_dim: usize) -> (Tensor, AttentionProbs) {
    let g = geometry(qkv, head_dim);
    let (t, hd, c3) = (g.tokens, g.hd, 3 * g.c);
    let qd = qkv.data();
    let per_head: Vec<(Vec<f32>, Vec<f32>)> = over_heads(g.n * g.heads, |job| {
        let (img, head) = (job / g.heads, job % g.heads);
        let base = &qd[img * t * c3 + head * 3 * hd..];
        let q = Mat::strided(base, t, hd, c3, 1);
        let k = Mat::strided(&base[hd..], t, hd, c3, 1);
        let v = Mat::strided(&base[2 * hd..], t, hd, c3, 1);
        let mut p = vec![0.0; t * t];
        matmul(q, k.t(), &mut p, t, false);
        p.iter_mut().for_each(|s| *s *= g.scale);
        softmax_rows(&mut p, t);
        let mut o = vec![0.0; t * hd];
        matmul(Mat::rows(&p, t, t), v, &mut o, hd, false);
        (o, p)
    });
    let mut out = vec![0.0; g.n * t * g.c];
    let mut probs = Vec::with_capacity(per_head.len());
    for (job, (o, p)) in per_head.into_iter().enumerate() {
        let (img, head) = (job / g.heads, job % g.heads);
        scatter_head(&o, hd, &mut out[img * t * g.c..], g.c, head * hd);
        probs.push(p);
    }
    let mut shape = qkv.shape().to_vec();
    shape[3] = g.c;
    (Tensor::from_vec(&shape, out), AttentionProbs(probs))
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
        let mut dblock = vec![0.0; t * 3 * hd];
        matmul(
            Mat::rows(p, t, t).t(),
            d_out,
            &mut dblock[2 * hd..],
            3 * hd,
            false,
        );
        let mut ds = vec![0.0; t * t];
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
    let mut dqkv = vec![0.0; qkv.numel()];
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
    let mut out = vec![0.0; g.n * t * g.c];
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

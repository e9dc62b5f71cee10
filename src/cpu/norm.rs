//! Group normalisation (ADM's GroupNorm32) with an optional fused SiLU.
//!
//! Layout: x `[n, h, w, c]`, gamma and beta `[c]`; `groups` divides `c` and
//! group g holds channels `g*c/groups .. (g+1)*c/groups` of every pixel.
//! `y = act((x - mean) * rstd * gamma + beta)`, statistics per (image, group)
//! in f64, biased variance, eps 1e-5 (PyTorch's). One rayon task per image.
//! The backward recomputes the normalised input from the saved statistics
//! instead of keeping a second copy of the activation.

use crate::tensor::Tensor;
use rayon::prelude::*;

pub const EPS: f64 = 1e-5;

/// Per (image, group) mean and reciprocal standard deviation, image-major.
#[derive(Clone, Debug)]
pub struct NormStats {
    pub mean: Vec<f32>,
    pub rstd: Vec<f32>,
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

pub fn group_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    silu: bool,
) -> (Tensor, NormStats) {
    let (n, h, w, c) = x.nhwc();
    assert!(
        c % groups == 0,
        "{c} channels do not split into {groups} groups"
    );
    assert_eq!(gamma.numel(), c, "group norm gamma");
    assert_eq!(beta.numel(), c, "group norm beta");
    let cg = c / groups;
    let image = h * w * c;
    let count = (h * w * cg) as f64;
    let (gd, bd) = (gamma.data(), beta.data());
    let mut y = vec![0.0; x.numel()];
    let stats: Vec<(Vec<f32>, Vec<f32>)> = y
        .par_chunks_mut(image)
        .zip(x.data().par_chunks(image))
        .map(|(yi, xi)| {
            let mut sum = vec![0.0f64; c];
            let mut sumsq = vec![0.0f64; c];
            for px in xi.chunks(c) {
                for ch in 0..c {
                    let v = px[ch] as f64;
                    sum[ch] += v;
                    sumsq[ch] += v * v;
                }
            }
            let mut mean = vec![0.0f32; groups];
            let mut rstd = vec![0.0f32; groups];
            for g in 0..groups {
                let s: f64 = sum[g * cg..(g + 1) * cg].iter().sum();
                let sq: f64 = sumsq[g * cg..(g + 1) * cg].iter().sum();
                let m = s / count;
                let var = (sq / count - m * m).max(0.0);
                mean[g] = m as f32;
                rstd[g] = (1.0 / (var + EPS).sqrt()) as f32;
            }
            for (ypx, xpx) in yi.chunks_mut(c).zip(xi.chunks(c)) {
                for ch in 0..c {
                    let g = ch / cg;
                    let z = (xpx[ch] - mean[g]) * rstd[g] * gd[ch] + bd[ch];
                    ypx[ch] = if silu { z * sigmoid(z) } else { z };
                }
            }
            (mean, rstd)
        })
        .collect();
    let (mean, rstd): (Vec<Vec<f32>>, Vec<Vec<f32>>) = stats.into_iter().unzip();
    let stats = NormStats {
        mean: mean.concat(),
        rstd: rstd.concat(),
    };
    (Tensor::from_vec(&[n, h, w, c], y), stats)
}

/// Returns (dx, dgamma, dbeta).
pub fn group_norm_backward(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    stats: &NormStats,
    dy: &Tensor,
    silu: bool,
) -> (Tensor, Tensor, Tensor) {
    let (_, h, w, c) = x.nhwc();
    let groups = stats.mean.len() / x.shape()[0];
    let cg = c / groups;
    let image = h * w * c;
    let count = (h * w * cg) as f32;
    let (gd, bd) = (gamma.data(), beta.data());
    let mut dx = vec![0.0; x.numel()];
    // Per image: sum over pixels of dz * xhat and of dz, per channel.
    let partials: Vec<(Vec<f64>, Vec<f64>)> = dx
        .par_chunks_mut(image)
        .zip(x.data().par_chunks(image))
        .zip(dy.data().par_chunks(image))
        .enumerate()
        .map(|(n, ((dxi, xi), dyi))| {
            let mean = &stats.mean[n * groups..(n + 1) * groups];
            let rstd = &stats.rstd[n * groups..(n + 1) * groups];
            let grad_pre_act = |ch: usize, xv: f32, dyv: f32| -> (f32, f32) {
                let g = ch / cg;
                let xhat = (xv - mean[g]) * rstd[g];
                let dz = if silu {
                    let s = sigmoid(xhat * gd[ch] + bd[ch]);
                    dyv * s * (1.0 + (xhat * gd[ch] + bd[ch]) * (1.0 - s))
                } else {
                    dyv
                };
                (xhat, dz)
            };
            let mut dz_xhat = vec![0.0f64; c];
            let mut dz_sum = vec![0.0f64; c];
            for (xpx, dypx) in xi.chunks(c).zip(dyi.chunks(c)) {
                for ch in 0..c {
                    let (xhat, dz) = grad_pre_act(ch, xpx[ch], dypx[ch]);
                    dz_xhat[ch] += (dz * xhat) as f64;
                    dz_sum[ch] += dz as f64;
                }
            }
            // dxhat = dz * gamma; its group means, plain and against xhat.
            let mut mean_dxhat = vec![0.0f32; groups];
            let mut mean_dxhat_xhat = vec![0.0f32; groups];
            for ch in 0..c {
                mean_dxhat[ch / cg] += (dz_sum[ch] * gd[ch] as f64) as f32 / count;
                mean_dxhat_xhat[ch / cg] += (dz_xhat[ch] * gd[ch] as f64) as f32 / count;
            }
            for ((dxpx, xpx), dypx) in dxi.chunks_mut(c).zip(xi.chunks(c)).zip(dyi.chunks(c)) {
                for ch in 0..c {
                    let g = ch / cg;
                    let (xhat, dz) = grad_pre_act(ch, xpx[ch], dypx[ch]);
                    dxpx[ch] = rstd[g] * (dz * gd[ch] - mean_dxhat[g] - xhat * mean_dxhat_xhat[g]);
                }
            }
            (dz_xhat, dz_sum)
        })
        .collect();
    let mut dgamma = vec![0.0f64; c];
    let mut dbeta = vec![0.0f64; c];
    for (a, b) in &partials {
        for ch in 0..c {
            dgamma[ch] += a[ch];
            dbeta[ch] += b[ch];
        }
    }
    let to_f32 = |v: Vec<f64>| Tensor::from_vec(&[c], v.into_iter().map(|x| x as f32).collect());
    (
        Tensor::from_vec(x.shape(), dx),
        to_f32(dgamma),
        to_f32(dbeta),
    )
}

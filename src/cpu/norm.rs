//! Group normalisation (ADM's GroupNorm32) with an optional fused SiLU.
//!
//! Layout: x `[n, h, w, c]`, gamma and beta `[c]`; `groups` divides `c` and
//! group g holds channels `g*c/groups .. (g+1)*c/groups` of every pixel.
//! `y = act((x - mean) * rstd * gamma + beta)`, statistics per (image, group)
//! in f64, biased variance, eps 1e-5 (PyTorch's). The backward recomputes
//! the normalised input from the saved statistics instead of keeping a
//! second copy of the activation.
//!
//! Threads: images in parallel, and within an image the per-channel sums in
//! parallel over blocks of 16 channels (a cache line of every pixel each)
//! and the per-pixel passes over chunks of pixels. Every channel's sum runs
//! over the pixels in order whatever the threads, so results do not depend
//! on how many there are (and a batch of one uses them all).

use crate::tensor::Tensor;
use rayon::prelude::*;

pub const EPS: f64 = 1e-5;

/// Per (image, group) mean and reciprocal standard deviation, image-major.
#[derive(Clone, Debug)]
pub struct NormStats {
    pub mean: Vec<f32>,
    pub rstd: Vec<f32>,
}

/// A value per group as a value per channel (group g's for each of its
/// `cg` channels), so the per-pixel loops index by channel alone.
fn per_channel(group_values: &[f32], cg: usize) -> Vec<f32> {
    group_values
        .iter()
        .flat_map(|&v| std::iter::repeat_n(v, cg))
        .collect()
}

/// Pixels per task of the per-pixel passes.
const PIXEL_GRAIN: usize = 1024;

/// Two f64 sums per channel: `sum(first, accs)` adds, pixel by pixel in
/// order, the terms of channels `first..first + accs.len()` into `accs`;
/// run in parallel over blocks of 16 channels.
fn channel_sums(c: usize, sum: impl Fn(usize, &mut [[f64; 2]]) + Sync) -> Vec<[f64; 2]> {
    let mut sums = vec![[0.0f64; 2]; c];
    sums.par_chunks_mut(16)
        .enumerate()
        .for_each(|(block, accs)| sum(16 * block, accs));
    sums
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
            let sums = channel_sums(c, |first, accs| {
                for px in xi.chunks_exact(c) {
                    for (acc, &v) in accs.iter_mut().zip(&px[first..]) {
                        let v = v as f64;
                        acc[0] += v;
                        acc[1] += v * v;
                    }
                }
            });
            let mut mean = vec![0.0f32; groups];
            let mut rstd = vec![0.0f32; groups];
            for g in 0..groups {
                let s: f64 = sums[g * cg..(g + 1) * cg].iter().map(|a| a[0]).sum();
                let sq: f64 = sums[g * cg..(g + 1) * cg].iter().map(|a| a[1]).sum();
                let m = s / count;
                let var = (sq / count - m * m).max(0.0);
                mean[g] = m as f32;
                rstd[g] = (1.0 / (var + EPS).sqrt()) as f32;
            }
            let (mean_c, rstd_c) = (per_channel(&mean, cg), per_channel(&rstd, cg));
            yi.par_chunks_mut(PIXEL_GRAIN * c)
                .zip(xi.par_chunks(PIXEL_GRAIN * c))
                .for_each(|(yc, xc)| {
                    for (ypx, xpx) in yc.chunks_exact_mut(c).zip(xc.chunks_exact(c)) {
                        for ch in 0..c {
                            let z = (xpx[ch] - mean_c[ch]) * rstd_c[ch] * gd[ch] + bd[ch];
                            ypx[ch] = if silu { z * sigmoid(z) } else { z };
                        }
                    }
                });
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
            let mean_c = per_channel(&stats.mean[n * groups..(n + 1) * groups], cg);
            let rstd_c = per_channel(&stats.rstd[n * groups..(n + 1) * groups], cg);
            let grad_pre_act = |ch: usize, xv: f32, dyv: f32| -> (f32, f32) {
                let xhat = (xv - mean_c[ch]) * rstd_c[ch];
                let dz = if silu {
                    let s = sigmoid(xhat * gd[ch] + bd[ch]);
                    dyv * s * (1.0 + (xhat * gd[ch] + bd[ch]) * (1.0 - s))
                } else {
                    dyv
                };
                (xhat, dz)
            };
            let sums = channel_sums(c, |first, accs| {
                for (xpx, dypx) in xi.chunks_exact(c).zip(dyi.chunks_exact(c)) {
                    for (k, acc) in accs.iter_mut().enumerate() {
                        let ch = first + k;
                        let (xhat, dz) = grad_pre_act(ch, xpx[ch], dypx[ch]);
                        acc[0] += (dz * xhat) as f64;
                        acc[1] += dz as f64;
                    }
                }
            });
            let dz_xhat: Vec<f64> = sums.iter().map(|a| a[0]).collect();
            let dz_sum: Vec<f64> = sums.iter().map(|a| a[1]).collect();
            // dxhat = dz * gamma; its group means, plain and against xhat.
            let mut mean_dxhat = vec![0.0f32; groups];
            let mut mean_dxhat_xhat = vec![0.0f32; groups];
            for ch in 0..c {
                mean_dxhat[ch / cg] += (dz_sum[ch] * gd[ch] as f64) as f32 / count;
                mean_dxhat_xhat[ch / cg] += (dz_xhat[ch] * gd[ch] as f64) as f32 / count;
            }
            let (mean_dxhat, mean_dxhat_xhat) = (
                per_channel(&mean_dxhat, cg),
                per_channel(&mean_dxhat_xhat, cg),
            );
            let chunk = PIXEL_GRAIN * c;
            dxi.par_chunks_mut(chunk)
                .zip(xi.par_chunks(chunk).zip(dyi.par_chunks(chunk)))
                .for_each(|(dxc, (xc, dyc))| {
                    let pixels = dxc
                        .chunks_exact_mut(c)
                        .zip(xc.chunks_exact(c))
                        .zip(dyc.chunks_exact(c));
                    for ((dxpx, xpx), dypx) in pixels {
                        for ch in 0..c {
                            let (xhat, dz) = grad_pre_act(ch, xpx[ch], dypx[ch]);
                            dxpx[ch] = rstd_c[ch]
                                * (dz * gd[ch] - mean_dxhat[ch] - xhat * mean_dxhat_xhat[ch]);
                        }
                    }
                });
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

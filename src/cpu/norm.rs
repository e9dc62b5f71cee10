//! Group normalisation (ADM's GroupNorm32) with an optional fused SiLU.
//!
//! Layout: x `[n, h, w, c]`, gamma and beta `[c]`; `groups` divides `c` and
//! group g holds channels `g*c/groups .. (g+1)*c/groups` of every pixel.
//! `y = act((x - mean) * rstd * gamma + beta)`, statistics per (image, group)
//! in f64, biased variance, eps 1e-5 (PyTorch's). The backward recomputes
//! the normalised input from the saved statistics instead of keeping a
//! second copy of the activation.
//!
//! Threads: images in parallel, and within an image chunks of PIXEL_GRAIN
//! pixels in parallel, for the sums and the per-pixel passes alike. Sums are
//! f64 per channel (vectorised across the channels of a pixel; f32 sums of
//! squares lose the variance to cancellation when the mean is large), then
//! added over the chunks in order, so results do not depend on how many
//! threads there are (and a batch of one uses them all).

use super::math::{multiversion, sigmoid};
use super::zeros;
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

/// Pixels per task.
const PIXEL_GRAIN: usize = 1024;

/// Two sums per channel over the `pixels` pixels of one image:
/// `add(range, a, b)` adds the terms of pixels `range` into the
/// accumulators `a` and `b` (`c` each).
fn channel_sums(
    pixels: usize,
    c: usize,
    add: impl Fn(std::ops::Range<usize>, &mut [f64], &mut [f64]) + Sync,
) -> Vec<[f64; 2]> {
    let chunks: Vec<(Vec<f64>, Vec<f64>)> = (0..pixels.div_ceil(PIXEL_GRAIN))
        .into_par_iter()
        .map(|chunk| {
            let (mut a, mut b) = (vec![0.0f64; c], vec![0.0f64; c]);
            add(
                chunk * PIXEL_GRAIN..((chunk + 1) * PIXEL_GRAIN).min(pixels),
                &mut a,
                &mut b,
            );
            (a, b)
        })
        .collect();
    let mut total = vec![[0.0f64; 2]; c];
    for (a, b) in chunks {
        for (t, (a, b)) in total.iter_mut().zip(a.into_iter().zip(b)) {
            t[0] += a;
            t[1] += b;
        }
    }
    total
}

multiversion! {
/// Adds `x` into `a` and `x^2` into `b`, per channel, over whole pixels.
fn moments(x: &[f32], a: &mut [f64], b: &mut [f64]) {
    for px in x.chunks_exact(a.len()) {
        for ((a, b), &v) in a.iter_mut().zip(b.iter_mut()).zip(px) {
            let v = f64::from(v);
            *a += v;
            *b += v * v;
        }
    }
}
}

multiversion! {
/// `y = act((x - mean) * gain + beta)` over whole pixels of `c = mean.len()`
/// channels.
fn normalize(y: &mut [f32], x: &[f32], mean: &[f32], gain: &[f32], beta: &[f32], silu: bool) {
    let c = mean.len();
    for (ypx, xpx) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
        let per_channel = mean.iter().zip(gain).zip(beta);
        for ((y, &x), ((&m, &g), &b)) in ypx.iter_mut().zip(xpx).zip(per_channel) {
            let z = (x - m) * g + b;
            *y = if silu { z * sigmoid(z) } else { z };
        }
    }
}
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
    let mut y = zeros(x.numel());
    let stats: Vec<(Vec<f32>, Vec<f32>)> = y
        .par_chunks_mut(image)
        .zip(x.data().par_chunks(image))
        .map(|(yi, xi)| {
            let sums = channel_sums(h * w, c, |pixels, a, b| {
                moments(&xi[pixels.start * c..pixels.end * c], a, b)
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
            // z = (x - mean) * (rstd * gamma) + beta, per channel.
            let mean_c = per_channel(&mean, cg);
            let gain: Vec<f32> = per_channel(&rstd, cg)
                .iter()
                .zip(gd)
                .map(|(r, g)| r * g)
                .collect();
            yi.par_chunks_mut(PIXEL_GRAIN * c)
                .zip(xi.par_chunks(PIXEL_GRAIN * c))
                .for_each(|(yc, xc)| normalize(yc, xc, &mean_c, &gain, bd, silu));
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

/// One image's per-channel constants in the backward.
struct Channels<'a> {
    mean: &'a [f32],
    rstd: &'a [f32],
    gamma: &'a [f32],
    beta: &'a [f32],
    silu: bool,
}

impl Channels<'_> {
    /// The normalised input and the gradient before the activation, at
    /// channel `ch`.
    #[inline(always)]
    fn grad_pre_act(&self, ch: usize, x: f32, dy: f32) -> (f32, f32) {
        let xhat = (x - self.mean[ch]) * self.rstd[ch];
        let dz = if self.silu {
            let z = xhat * self.gamma[ch] + self.beta[ch];
            let s = sigmoid(z);
            dy * s * (1.0 + z * (1.0 - s))
        } else {
            dy
        };
        (xhat, dz)
    }
}

multiversion! {
/// Adds `dz * xhat` into `a` and `dz` into `b`, per channel, over whole pixels.
fn backward_sums(k: &Channels<'_>, x: &[f32], dy: &[f32], a: &mut [f64], b: &mut [f64]) {
    let c = a.len();
    for (xpx, dypx) in x.chunks_exact(c).zip(dy.chunks_exact(c)) {
        let (xpx, dypx, b) = (&xpx[..c], &dypx[..c], &mut b[..c]);
        for ch in 0..c {
            let (xhat, dz) = k.grad_pre_act(ch, xpx[ch], dypx[ch]);
            a[ch] += f64::from(dz * xhat);
            b[ch] += f64::from(dz);
        }
    }
}
}

multiversion! {
/// `dx = rstd * (dz * gamma - mean(dxhat) - xhat * mean(dxhat * xhat))`
/// over whole pixels.
fn backward_dx(
    k: &Channels<'_>,
    mean_dxhat: &[f32],
    mean_dxhat_xhat: &[f32],
    dx: &mut [f32],
    x: &[f32],
    dy: &[f32],
) {
    let c = mean_dxhat.len();
    let pixels = dx.chunks_exact_mut(c).zip(x.chunks_exact(c)).zip(dy.chunks_exact(c));
    for ((dxpx, xpx), dypx) in pixels {
        let (xpx, dypx, md, mdx) = (&xpx[..c], &dypx[..c], &mean_dxhat[..c], &mean_dxhat_xhat[..c]);
        for ch in 0..c {
            let (xhat, dz) = k.grad_pre_act(ch, xpx[ch], dypx[ch]);
            dxpx[ch] = k.rstd[ch] * (dz * k.gamma[ch] - md[ch] - xhat * mdx[ch]);
        }
    }
}
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
    let mut dx = zeros(x.numel());
    // Per image: sum over pixels of dz * xhat and of dz, per channel.
    let partials: Vec<(Vec<f64>, Vec<f64>)> = dx
        .par_chunks_mut(image)
        .zip(x.data().par_chunks(image))
        .zip(dy.data().par_chunks(image))
        .enumerate()
        .map(|(n, ((dxi, xi), dyi))| {
            let mean_c = per_channel(&stats.mean[n * groups..(n + 1) * groups], cg);
            let rstd_c = per_channel(&stats.rstd[n * groups..(n + 1) * groups], cg);
            let k = Channels {
                mean: &mean_c,
                rstd: &rstd_c,
                gamma: gd,
                beta: bd,
                silu,
            };
            let sums = channel_sums(h * w, c, |pixels, a, b| {
                let span = pixels.start * c..pixels.end * c;
                backward_sums(&k, &xi[span.clone()], &dyi[span], a, b)
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
                    backward_dx(&k, &mean_dxhat, &mean_dxhat_xhat, dxc, xc, dyc)
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

//! Element-wise ops: SiLU, add, ADM's per-image channel modulation, and the
//! whole-tensor `axpy` and sum of squares (gradient accumulation, clipping).
//!
//! Layout: any shape for SiLU and add; `scale_shift` takes x `[n, h, w, c]`
//! and a per-image vector `ss` of `[n, 2c]` (scale then shift, the order of
//! `torch.chunk(emb_out, 2, dim=1)`: `y = x * (1 + scale) + shift`, ADM's
//! use_scale_shift_norm) or `[n, c]` (shift only: `y = x + shift`, ADM
//! without it). Memory-bound loops, split across the rayon pool.

use super::math::{multiversion, sigmoid};
use super::zeros;
use crate::tensor::Tensor;
use rayon::prelude::*;

/// Elements per rayon task: large enough to amortise scheduling.
const GRAIN: usize = 1 << 14;

/// Elements per task in the whole-tensor loops (`axpy`, `sum_sq`): they run
/// once per parameter and skip connection in every training step (serial,
/// they left a core idle), and their chunks are fixed so the bits do not
/// depend on the thread count.
const ELEMS_PER_TASK: usize = 1 << 16;

/// `y += alpha * x`, element by element (gradient accumulation).
pub fn axpy(y: &mut Tensor, alpha: f32, x: &Tensor) {
    let axpy = |(a, b): (&mut [f32], &[f32])| {
        for (a, b) in a.iter_mut().zip(b) {
            *a += alpha * *b;
        }
    };
    if y.numel() <= ELEMS_PER_TASK {
        // One task's worth: not worth a trip through the pool.
        return axpy((y.data_mut(), x.data()));
    }
    let pairs = y
        .data_mut()
        .par_chunks_mut(ELEMS_PER_TASK)
        .zip(x.data().par_chunks(ELEMS_PER_TASK));
    pairs.for_each(axpy);
}

/// The sum of squares, in f64: per chunk, the chunks added in order (the
/// same bits for any thread count).
pub fn sum_sq(x: &Tensor) -> f64 {
    let square_sum = |c: &[f32]| c.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>();
    if x.numel() <= ELEMS_PER_TASK {
        return square_sum(x.data());
    }
    let chunk_sums: Vec<f64> = x
        .data()
        .par_chunks(ELEMS_PER_TASK)
        .map(square_sum)
        .collect();
    chunk_sums.iter().sum()
}

multiversion! {
fn silu_values(y: &mut [f32], x: &[f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = v * sigmoid(v);
    }
}
}

multiversion! {
fn silu_grads(dx: &mut [f32], x: &[f32], dy: &[f32]) {
    for ((o, &v), &d) in dx.iter_mut().zip(x).zip(dy) {
        let s = sigmoid(v);
        *o = d * s * (1.0 + v * (1.0 - s));
    }
}
}

pub fn silu(x: &Tensor) -> Tensor {
    let mut y = zeros(x.numel());
    y.par_chunks_mut(GRAIN)
        .zip(x.data().par_chunks(GRAIN))
        .for_each(|(yc, xc)| silu_values(yc, xc));
    Tensor::from_vec(x.shape(), y)
}

pub fn silu_backward(x: &Tensor, dy: &Tensor) -> Tensor {
    let mut dx = zeros(x.numel());
    dx.par_chunks_mut(GRAIN)
        .zip(x.data().par_chunks(GRAIN).zip(dy.data().par_chunks(GRAIN)))
        .for_each(|(o, (xc, dc))| silu_grads(o, xc, dc));
    Tensor::from_vec(x.shape(), dx)
}

pub fn add(a: &Tensor, b: &Tensor) -> Tensor {
    assert_eq!(a.shape(), b.shape(), "add shape mismatch");
    let mut y = zeros(a.numel());
    y.par_chunks_mut(GRAIN)
        .zip(a.data().par_chunks(GRAIN).zip(b.data().par_chunks(GRAIN)))
        .for_each(|(o, (ac, bc))| {
            for ((o, &u), &v) in o.iter_mut().zip(ac).zip(bc) {
                *o = u + v;
            }
        });
    Tensor::from_vec(a.shape(), y)
}

/// Whether `ss` carries a scale (2c channels) or only a shift (c channels).
/// Channels, and whether `ss` holds a scale (`[n, 2c]`) or only a shift
/// (`[n, c]`); shared with the CUDA twin.
pub(crate) fn modulation(x: &Tensor, ss: &Tensor) -> (usize, bool) {
    let (n, _, _, c) = x.nhwc();
    match ss.shape() {
        [sn, sc] if *sn == n && *sc == 2 * c => (c, true),
        [sn, sc] if *sn == n && *sc == c => (c, false),
        other => panic!("scale/shift {other:?} does not fit {:?}", x.shape()),
    }
}

pub fn scale_shift(x: &Tensor, ss: &Tensor) -> Tensor {
    let (c, has_scale) = modulation(x, ss);
    let width = ss.shape()[1];
    let image = x.numel() / x.shape()[0];
    let mut y = zeros(x.numel());
    // Chunks of whole pixels inside one image, so a batch of one uses every
    // thread.
    let chunk = (GRAIN / c).max(1) * c;
    y.par_chunks_mut(image)
        .zip(x.data().par_chunks(image).zip(ss.data().par_chunks(width)))
        .for_each(|(yi, (xi, s))| {
            let (scale, shift) = if has_scale {
                s.split_at(c)
            } else {
                (&[][..], s)
            };
            yi.par_chunks_mut(chunk)
                .zip(xi.par_chunks(chunk))
                .for_each(|(yc, xc)| {
                    for (ypx, xpx) in yc.chunks_mut(c).zip(xc.chunks(c)) {
                        for ch in 0..c {
                            let gain = if has_scale { 1.0 + scale[ch] } else { 1.0 };
                            ypx[ch] = xpx[ch] * gain + shift[ch];
                        }
                    }
                });
        });
    Tensor::from_vec(x.shape(), y)
}

/// Returns (dx, dss).
pub fn scale_shift_backward(x: &Tensor, ss: &Tensor, dy: &Tensor) -> (Tensor, Tensor) {
    let (c, has_scale) = modulation(x, ss);
    let width = ss.shape()[1];
    let image = x.numel() / x.shape()[0];
    let mut dx = zeros(x.numel());
    let mut dss = zeros(ss.numel());
    dx.par_chunks_mut(image)
        .zip(dss.par_chunks_mut(width))
        .zip(x.data().par_chunks(image).zip(dy.data().par_chunks(image)))
        .zip(ss.data().par_chunks(width))
        .for_each(|(((dxi, dsi), (xi, dyi)), s)| {
            let mut dscale = vec![0.0f64; c];
            let mut dshift = vec![0.0f64; c];
            for ((dxpx, xpx), dypx) in dxi.chunks_mut(c).zip(xi.chunks(c)).zip(dyi.chunks(c)) {
                for ch in 0..c {
                    let gain = if has_scale { 1.0 + s[ch] } else { 1.0 };
                    dxpx[ch] = dypx[ch] * gain;
                    dscale[ch] += (dypx[ch] * xpx[ch]) as f64;
                    dshift[ch] += dypx[ch] as f64;
                }
            }
            let (ds_scale, ds_shift) = if has_scale {
                dsi.split_at_mut(c)
            } else {
                (&mut [][..], dsi)
            };
            for ch in 0..c {
                if has_scale {
                    ds_scale[ch] = dscale[ch] as f32;
                }
                ds_shift[ch] = dshift[ch] as f32;
            }
        });
    (
        Tensor::from_vec(x.shape(), dx),
        Tensor::from_vec(ss.shape(), dss),
    )
}

/// Channel concatenation `[n, h, w, ca] ++ [n, h, w, cb]` (the U-Net's
/// skips), chunks of pixels in parallel.
pub fn concat(a: &Tensor, b: &Tensor) -> Tensor {
    let (n, h, w, ca) = a.nhwc();
    let (nb, hb, wb, cb) = b.nhwc();
    assert_eq!((n, h, w), (nb, hb, wb), "concat of mismatched images");
    let c = ca + cb;
    let pixels_per_task = (GRAIN / c).max(1);
    let mut y = zeros(a.numel() + b.numel());
    y.par_chunks_mut(pixels_per_task * c)
        .zip(a.data().par_chunks(pixels_per_task * ca))
        .zip(b.data().par_chunks(pixels_per_task * cb))
        .for_each(|((yc, ac), bc)| {
            for ((px, pa), pb) in yc.chunks_mut(c).zip(ac.chunks(ca)).zip(bc.chunks(cb)) {
                px[..ca].copy_from_slice(pa);
                px[ca..].copy_from_slice(pb);
            }
        });
    Tensor::from_vec(&[n, h, w, c], y)
}

/// Splits a gradient of `concat` back into its two parts.
pub fn concat_backward(dy: &Tensor, ca: usize) -> (Tensor, Tensor) {
    let (n, h, w, c) = dy.nhwc();
    let cb = c - ca;
    let pixels_per_task = (GRAIN / c).max(1);
    let mut da = zeros(n * h * w * ca);
    let mut db = zeros(n * h * w * cb);
    da.par_chunks_mut(pixels_per_task * ca)
        .zip(db.par_chunks_mut(pixels_per_task * cb))
        .zip(dy.data().par_chunks(pixels_per_task * c))
        .for_each(|((ac, bc), yc)| {
            for ((px, pa), pb) in yc.chunks(c).zip(ac.chunks_mut(ca)).zip(bc.chunks_mut(cb)) {
                pa.copy_from_slice(&px[..ca]);
                pb.copy_from_slice(&px[ca..]);
            }
        });
    (
        Tensor::from_vec(&[n, h, w, ca], da),
        Tensor::from_vec(&[n, h, w, cb], db),
    )
}

//! The bridges' fused element-wise ops: training pairs and posterior steps.
//!
//! Both NADB and I2SB write their interpolant and target, and every sampler
//! step, as linear combinations of at most three images plus Philox noise
//! (see `bridge/`), so one op of each kind serves both methods:
//!
//! - `training_pair`: per image b, `xt = p.x0 x0 + p.e e + p.z z` and
//!   `target = q.x0 x0 + q.e e + q.z z`, with `z` normal noise element
//!   `b * image_len + i` of the given stream;
//! - `posterior_step`: `x' = s.out out + s.x x + s.e e + s.noise z`, the same
//!   coefficients for every image.
//!
//! Layout: all images NHWC, same shape. The GPU twins do each in one pass
//! with the noise drawn in-kernel; here the noise is drawn into the output
//! buffer first and combined in place.

use super::zeros;
use crate::rng::{fill_normal, Stream};
use crate::tensor::Tensor;
use rayon::prelude::*;

/// Coefficients of `x0`, `e` and the noise `z` in one combination.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Combo {
    pub x0: f32,
    pub e: f32,
    pub z: f32,
}

/// `(xt, target)` for a batch; `per_image[b] = (xt coefficients, target
/// coefficients)`.
pub fn training_pair(
    x0: &Tensor,
    e: &Tensor,
    per_image: &[(Combo, Combo)],
    seed: u64,
    stream: Stream,
) -> (Tensor, Tensor) {
    assert_eq!(x0.shape(), e.shape(), "bridge endpoints differ in shape");
    let n = x0.shape()[0];
    assert_eq!(per_image.len(), n, "one coefficient pair per image");
    let image = x0.numel() / n;
    let mut xt = zeros(x0.numel());
    fill_normal(seed, stream, &mut xt);
    let mut target = zeros(x0.numel());
    xt.par_chunks_mut(image)
        .zip(target.par_chunks_mut(image))
        .zip(x0.data().par_chunks(image).zip(e.data().par_chunks(image)))
        .zip(per_image.par_iter())
        .for_each(|(((xi, ti), (ai, bi)), (p, q))| {
            for (((x, t), &a), &b) in xi.iter_mut().zip(ti.iter_mut()).zip(ai).zip(bi) {
                let z = *x;
                *x = p.x0 * a + p.e * b + p.z * z;
                *t = q.x0 * a + q.e * b + q.z * z;
            }
        });
    (
        Tensor::from_vec(x0.shape(), xt),
        Tensor::from_vec(x0.shape(), target),
    )
}

/// Coefficients of one sampler step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepCoeffs {
    /// Of the raw network output.
    pub out: f32,
    /// Of the current state.
    pub x: f32,
    /// Of the source endpoint.
    pub e: f32,
    /// Standard deviation of the added noise (0 on a last step).
    pub noise: f32,
}

pub fn posterior_step(
    out: &Tensor,
    x: &Tensor,
    e: &Tensor,
    s: StepCoeffs,
    seed: u64,
    stream: Stream,
) -> Tensor {
    assert!(
        out.shape() == x.shape() && x.shape() == e.shape(),
        "posterior shapes differ"
    );
    let mut next = zeros(x.numel());
    if s.noise != 0.0 {
        fill_normal(seed, stream, &mut next);
    }
    next.par_chunks_mut(4096)
        .zip(out.data().par_chunks(4096))
        .zip(x.data().par_chunks(4096).zip(e.data().par_chunks(4096)))
        .for_each(|((nc, oc), (xc, ec))| {
            for (((n, &o), &xv), &ev) in nc.iter_mut().zip(oc).zip(xc).zip(ec) {
                *n = s.out * o + s.x * xv + s.e * ev + s.noise * *n;
            }
        });
    Tensor::from_vec(x.shape(), next)
}

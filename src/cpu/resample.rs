//! Resolution changes of the U-Net: nearest 2x upsampling and 2x2 average
//! pooling (ADM's resblock up and down, `use_conv=False`).
//!
//! Layout: `[n, h, w, c]` in, `[n, 2h, 2w, c]` or `[n, h/2, w/2, c]` out;
//! pooling needs even sides. Memory-bound; one rayon task per output row.

use super::zeros;
use crate::tensor::Tensor;
use rayon::prelude::*;

pub fn upsample2x(x: &Tensor) -> Tensor {
    let (n, h, w, c) = x.nhwc();
    let xd = x.data();
    let mut y = zeros(n * 4 * h * w * c);
    y.par_chunks_mut(2 * w * c)
        .enumerate()
        .for_each(|(row, yr)| {
            let (img, oy) = (row / (2 * h), row % (2 * h));
            let src = &xd[(img * h + oy / 2) * w * c..][..w * c];
            for (ox, px) in yr.chunks_mut(c).enumerate() {
                px.copy_from_slice(&src[(ox / 2) * c..][..c]);
            }
        });
    Tensor::from_vec(&[n, 2 * h, 2 * w, c], y)
}

/// Each input pixel collects the gradient of its four copies.
pub fn upsample2x_backward(dy: &Tensor) -> Tensor {
    let (n, h2, w2, c) = dy.nhwc();
    sum_2x2(dy.data(), n, h2 / 2, w2 / 2, c, 1.0)
}

pub fn avgpool2x(x: &Tensor) -> Tensor {
    let (n, h, w, c) = x.nhwc();
    assert!(h % 2 == 0 && w % 2 == 0, "2x2 pooling of odd size {h}x{w}");
    sum_2x2(x.data(), n, h / 2, w / 2, c, 0.25)
}

/// Each input pixel gets a quarter of its window's gradient.
pub fn avgpool2x_backward(dy: &Tensor) -> Tensor {
    let mut dx = upsample2x(dy).into_vec();
    dx.par_iter_mut().for_each(|v| *v *= 0.25);
    let (n, h, w, c) = dy.nhwc();
    Tensor::from_vec(&[n, 2 * h, 2 * w, c], dx)
}

/// `[n, 2ho, 2wo, c]` -> `[n, ho, wo, c]`: each output is `scale` times the
/// sum of its 2x2 window.
fn sum_2x2(xd: &[f32], n: usize, ho: usize, wo: usize, c: usize, scale: f32) -> Tensor {
    let (h, w) = (2 * ho, 2 * wo);
    let mut y = zeros(n * ho * wo * c);
    y.par_chunks_mut(wo * c).enumerate().for_each(|(row, yr)| {
        let (img, oy) = (row / ho, row % ho);
        let top = &xd[(img * h + 2 * oy) * w * c..][..w * c];
        let bottom = &xd[(img * h + 2 * oy + 1) * w * c..][..w * c];
        for (ox, px) in yr.chunks_mut(c).enumerate() {
            let (l, r) = (2 * ox * c, (2 * ox + 1) * c);
            for (ch, out) in px.iter_mut().enumerate() {
                *out = scale * (top[l + ch] + top[r + ch] + bottom[l + ch] + bottom[r + ch]);
            }
        }
    });
    Tensor::from_vec(&[n, ho, wo, c], y)
}

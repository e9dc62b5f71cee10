//! Reflection padding and cropping of NHWC images: any image size goes
//! through a network or an operator that needs sides in multiples of m.
//!
//! Reflection as numpy's 'reflect' (the edge pixel is not repeated:
//! `[a b c] -> [a b c b a]`), on the bottom and right sides.

use crate::bail;
use crate::error::Result;
use crate::tensor::Tensor;

fn reflect(i: usize, n: usize) -> usize {
    // Period 2(n - 1): 0 1 .. n-1 n-2 .. 1 0 1 ..
    let period = 2 * (n - 1);
    let r = i % period;
    if r < n {
        r
    } else {
        period - r
    }
}

/// Pads bottom and right by reflection up to the next multiple of `m`.
pub fn pad_reflect(x: &Tensor, m: usize) -> Result<Tensor> {
    let (n, h, w, c) = x.nhwc();
    let (ph, pw) = (h.next_multiple_of(m), w.next_multiple_of(m));
    if (ph, pw) == (h, w) {
        return Ok(x.clone());
    }
    if (ph > h && h < 2) || (pw > w && w < 2) || ph - h >= h || pw - w >= w {
        bail!("a {h}x{w} image is too small to pad by reflection to a multiple of {m}");
    }
    let xd = x.data();
    let mut out = Vec::with_capacity(n * ph * pw * c);
    for img in 0..n {
        for y in 0..ph {
            let sy = reflect(y, h);
            for xx in 0..pw {
                let sx = reflect(xx, w);
                out.extend_from_slice(&xd[((img * h + sy) * w + sx) * c..][..c]);
            }
        }
    }
    Ok(Tensor::from_vec(&[n, ph, pw, c], out))
}

/// The top-left `h x w` of every image.
pub fn crop(x: &Tensor, h: usize, w: usize) -> Tensor {
    let (n, xh, xw, c) = x.nhwc();
    assert!(h <= xh && w <= xw, "crop {h}x{w} of a {xh}x{xw} image");
    if (h, w) == (xh, xw) {
        return x.clone();
    }
    let mut out = Vec::with_capacity(n * h * w * c);
    for img in 0..n {
        for y in 0..h {
            out.extend_from_slice(&x.data()[((img * xh + y) * xw) * c..][..w * c]);
        }
    }
    Tensor::from_vec(&[n, h, w, c], out)
}

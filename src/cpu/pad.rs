//! Reflection padding and cropping of NHWC images: any image size goes
//! through a network or an operator that needs sides in multiples of m.
//!
//! Reflection as numpy's 'reflect' (the edge pixel is not repeated:
//! `[a b c] -> [a b c b a]`), on the bottom and right sides.

use crate::bail;
use crate::error::Result;
use crate::tensor::Tensor;

/// numpy's 'reflect' extension of `0..n` (no edge repeat), any distance;
/// `n >= 2`. Period 2(n - 1): 0 1 .. n-1 n-2 .. 1 0 1 ..
pub fn reflect_index(i: usize, n: usize) -> usize {
    let period = 2 * (n - 1);
    let r = i % period;
    if r < n {
        r
    } else {
        period - r
    }
}

/// Half-sample symmetric extension of `0..n` (edge repeated: -1 -> 0,
/// n -> n - 1), any distance: scipy.ndimage's 'reflect' and DDRM's
/// `SRConv` boundary. Period 2n.
pub fn symmetric_index(j: isize, n: usize) -> usize {
    let period = 2 * n as isize;
    let m = j.rem_euclid(period) as usize;
    if m < n {
        m
    } else {
        2 * n - 1 - m
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
            let sy = reflect_index(y, h);
            for xx in 0..pw {
                let sx = reflect_index(xx, w);
                out.extend_from_slice(&xd[((img * h + sy) * w + sx) * c..][..c]);
            }
        }
    }
    Ok(Tensor::from_vec(&[n, ph, pw, c], out))
}

/// The `h x w` window at (y0, x0) of every image.
pub fn crop(x: &Tensor, y0: usize, x0: usize, h: usize, w: usize) -> Tensor {
    let (n, xh, xw, c) = x.nhwc();
    assert!(
        y0 + h <= xh && x0 + w <= xw,
        "crop {h}x{w} at ({y0}, {x0}) of a {xh}x{xw} image"
    );
    if (y0, x0, h, w) == (0, 0, xh, xw) {
        return x.clone();
    }
    let mut out = Vec::with_capacity(n * h * w * c);
    for img in 0..n {
        for y in y0..y0 + h {
            out.extend_from_slice(&x.data()[((img * xh + y) * xw + x0) * c..][..w * c]);
        }
    }
    Tensor::from_vec(&[n, h, w, c], out)
}

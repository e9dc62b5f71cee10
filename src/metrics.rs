//! Image-quality metrics (spec section 8): PSNR and SSIM on 8-bit RGB.
//!
//! Layout: the 8-bit functions take interleaved HWC images (`h * w * c`
//! bytes, channel fastest); the tensor functions take NHWC `f32` batches in
//! [-1, 1] and return one value per image. Images are first quantised with
//! [`to_u8`]; all arithmetic after that is in `f64`.
//!
//! Both metrics reproduce scikit-image (checked to 1e-3, in practice ~1e-12,
//! by `tests/metrics.rs` against `tests/fixtures/metrics.json`, which
//! `scripts/metrics_fixture.py` generates):
//!
//! * [`psnr_u8`] is `peak_signal_noise_ratio(a, b, data_range=255)`:
//!   `10 log10(255^2 / MSE)`, the MSE taken over every pixel and channel.
//!   Identical images give `f64::INFINITY` (scikit-image divides by zero and
//!   returns `inf` too, with a warning).
//! * [`ssim_u8`] is `structural_similarity(a, b, gaussian_weights=True,
//!   sigma=1.5, use_sample_covariance=False, data_range=255,
//!   channel_axis=-1)`, i.e. Wang et al. 2004: per channel, the local means,
//!   variances and covariance come from `scipy.ndimage.gaussian_filter`
//!   (sigma 1.5, truncate 3.5, so radius 5 and an 11-tap kernel normalised to
//!   sum 1, applied separably along rows then columns, boundary mode
//!   `reflect`, which repeats the edge sample: `d c b a | a b c d | d c b a`);
//!   variances use the population normalisation (no `NP / (NP - 1)` factor);
//!   C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2; the SSIM map is averaged after
//!   cropping 5 pixels from every border; the result is the mean over
//!   channels.
//!
//! Note: the NADB/I2SB Python code computes its own PSNR/SSIM differently
//! (NADB's `sample.py` uses float images in [0, 1] and `pytorch_msssim`); this
//! module follows the spec, not that code.

use rayon::prelude::*;

use crate::cpu::pad::symmetric_index;
use crate::tensor::Tensor;

/// Peak value of 8-bit images (scikit-image's `data_range`).
const DATA_RANGE: f64 = 255.0;
/// Gaussian window of SSIM: sigma and radius (`int(3.5 * 1.5 + 0.5)`).
const SIGMA: f64 = 1.5;
const RADIUS: usize = 5;
const WIN: usize = 2 * RADIUS + 1;
const K1: f64 = 0.01;
const K2: f64 = 0.03;

/// Quantises values in [-1, 1] to 8 bits: `round(clamp((x + 1) * 127.5, 0,
/// 255))`, rounding half away from zero.
///
/// The affine map and its `f32` arithmetic are those of I2SB/NADB's
/// `convert_to_numpy` (`(t + 1) * 127.5`, clamp to [0, 255]). That function
/// then truncates (`.to(torch.uint8)`); the spec asks for rounding, which is
/// what the PNGs those pipelines save do (`torchvision.utils.save_image`:
/// `mul(255).add_(0.5).clamp_(0, 255).to(uint8)`, i.e. round half up, the
/// same as half away from zero on non-negative values). So -1 -> 0, 0 -> 128
/// (127.5 rounds up), 1 -> 255, anything below -1 -> 0, above 1 -> 255. NaN
/// maps to 0.
pub fn to_u8(x: &[f32]) -> Vec<u8> {
    x.iter()
        .map(|&v| ((v + 1.0) * 127.5).clamp(0.0, 255.0).round() as u8)
        .collect()
}

/// PSNR in dB of two 8-bit images of the same length (any layout), with peak
/// 255. Identical images give `f64::INFINITY`.
pub fn psnr_u8(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len(), "psnr: images differ in size");
    assert!(!a.is_empty(), "psnr: empty images");
    let sse: u64 = a
        .iter()
        .zip(b)
        .map(|(&p, &q)| {
            let d = (p as i64 - q as i64).unsigned_abs();
            d * d
        })
        .sum();
    if sse == 0 {
        return f64::INFINITY;
    }
    let mse = sse as f64 / a.len() as f64;
    10.0 * (DATA_RANGE * DATA_RANGE / mse).log10()
}

/// Mean SSIM of two interleaved HWC 8-bit images, averaged over the `c`
/// channels (see the module documentation for the exact definition).
///
/// Panics if the lengths are not `h * w * c` or if `h` or `w` is below 11,
/// the window size (scikit-image raises an error there).
pub fn ssim_u8(a: &[u8], b: &[u8], h: usize, w: usize, c: usize) -> f64 {
    assert!(c > 0, "ssim: no channels");
    assert_eq!(a.len(), h * w * c, "ssim: first image is not {h}x{w}x{c}");
    assert_eq!(b.len(), h * w * c, "ssim: second image is not {h}x{w}x{c}");
    assert!(
        h >= WIN && w >= WIN,
        "ssim: image {h}x{w} is smaller than the {WIN}x{WIN} window"
    );
    let kernel = gaussian_kernel();
    let sum: f64 = (0..c)
        .into_par_iter()
        .map(|ch| {
            let x: Vec<f64> = a[ch..].iter().step_by(c).map(|&v| v as f64).collect();
            let y: Vec<f64> = b[ch..].iter().step_by(c).map(|&v| v as f64).collect();
            ssim_plane(&x, &y, h, w, &kernel)
        })
        .collect::<Vec<f64>>()
        .iter()
        .sum();
    sum / c as f64
}

/// PSNR of each image of two NHWC batches in [-1, 1] (quantised by [`to_u8`]).
pub fn psnr(x: &Tensor, y: &Tensor) -> Vec<f64> {
    per_image(x, y, |a, b, _, _, _| psnr_u8(a, b))
}

/// SSIM of each image of two NHWC batches in [-1, 1] (quantised by [`to_u8`]).
pub fn ssim(x: &Tensor, y: &Tensor) -> Vec<f64> {
    per_image(x, y, ssim_u8)
}

fn per_image<F>(x: &Tensor, y: &Tensor, f: F) -> Vec<f64>
where
    F: Fn(&[u8], &[u8], usize, usize, usize) -> f64 + Sync,
{
    assert_eq!(x.shape(), y.shape(), "metrics: batches differ in shape");
    let (n, h, w, c) = x.nhwc();
    let size = h * w * c;
    if n == 0 || size == 0 {
        return vec![f64::NAN; n];
    }
    x.data()
        .par_chunks(size)
        .zip(y.data().par_chunks(size))
        .map(|(xi, yi)| f(&to_u8(xi), &to_u8(yi), h, w, c))
        .collect()
}

/// scipy's `_gaussian_kernel1d(sigma, 0, radius)`: exp(-x^2 / (2 sigma^2)) on
/// x = -radius..=radius, normalised to sum 1.
fn gaussian_kernel() -> [f64; WIN] {
    let mut k = [0.0; WIN];
    for (i, v) in k.iter_mut().enumerate() {
        let x = i as f64 - RADIUS as f64;
        *v = (-0.5 / (SIGMA * SIGMA) * x * x).exp();
    }
    let s: f64 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= s);
    k
}

/// `gaussian_filter(img, 1.5, truncate=3.5, mode='reflect')` of an `h x w`
/// row-major plane: along axis 0 (rows), then axis 1 (columns).
fn gaussian_filter(img: &[f64], h: usize, w: usize, k: &[f64; WIN]) -> Vec<f64> {
    let r = RADIUS as isize;
    let mut tmp = vec![0.0; h * w];
    for i in 0..h {
        for (t, &kt) in k.iter().enumerate() {
            let src = symmetric_index(i as isize + t as isize - r, h) * w;
            let row = &img[src..src + w];
            for (o, &v) in tmp[i * w..(i + 1) * w].iter_mut().zip(row) {
                *o += kt * v;
            }
        }
    }
    let mut out = vec![0.0; h * w];
    for i in 0..h {
        let row = &tmp[i * w..(i + 1) * w];
        for j in 0..w {
            out[i * w + j] = k
                .iter()
                .enumerate()
                .map(|(t, &kt)| kt * row[symmetric_index(j as isize + t as isize - r, w)])
                .sum();
        }
    }
    out
}

/// Mean SSIM of one channel (scikit-image's single-channel path).
fn ssim_plane(x: &[f64], y: &[f64], h: usize, w: usize, k: &[f64; WIN]) -> f64 {
    let prod =
        |f: fn(f64, f64) -> f64| -> Vec<f64> { x.iter().zip(y).map(|(&p, &q)| f(p, q)).collect() };
    let ux = gaussian_filter(x, h, w, k);
    let uy = gaussian_filter(y, h, w, k);
    let uxx = gaussian_filter(&prod(|p, _| p * p), h, w, k);
    let uyy = gaussian_filter(&prod(|_, q| q * q), h, w, k);
    let uxy = gaussian_filter(&prod(|p, q| p * q), h, w, k);
    let c1 = (K1 * DATA_RANGE).powi(2);
    let c2 = (K2 * DATA_RANGE).powi(2);
    let mut sum = 0.0;
    for i in RADIUS..h - RADIUS {
        for j in RADIUS..w - RADIUS {
            let p = i * w + j;
            let (mx, my) = (ux[p], uy[p]);
            let vx = uxx[p] - mx * mx;
            let vy = uyy[p] - my * my;
            let vxy = uxy[p] - mx * my;
            let num = (2.0 * mx * my + c1) * (2.0 * vxy + c2);
            let den = (mx * mx + my * my + c1) * (vx + vy + c2);
            sum += num / den;
        }
    }
    sum / ((h - 2 * RADIUS) * (w - 2 * RADIUS)) as f64
}

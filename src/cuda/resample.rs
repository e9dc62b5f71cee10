//! Nearest 2x upsampling and 2x2 average pooling on device tensors, and
//! their backwards (kernels/resample.cu), twins of `cpu::resample`.
//!
//! Two kernels cover the four ops: `resample_up2x` copies every pixel to
//! its 2x2 block times a scale (upsampling with 1, the pooling backward with
//! 0.25) and `resample_sum2x2` sums every 2x2 block times a scale (pooling
//! with 0.25, the upsampling backward with 1). Layout NHWC; the 2x2 sums
//! need even sides.

use super::{int, opened, Arg};
use crate::tensor::Tensor;

/// Threads per block; blocks cover one row of the smaller tensor each.
const THREADS: u32 = 256;
/// Grid rows; a grid-stride loop covers the rest.
const MAX_ROWS: usize = 65535;

/// Grid over `rows` rows of `row_len` elements (of the smaller tensor).
fn grid(rows: usize, row_len: usize) -> (u32, u32, u32) {
    (
        row_len.div_ceil(THREADS as usize) as u32,
        rows.min(MAX_ROWS) as u32,
        1,
    )
}

/// `[n, h, w, c]` -> `[n, 2h, 2w, c]`, every output `scale` times its source.
fn up2x(x: &Tensor, scale: f32) -> Tensor {
    let (n, h, w, c) = x.nhwc();
    let y = Tensor::empty_cuda(&[n, 2 * h, 2 * w, c], x.dtype());
    opened().launch(
        "resample_up2x",
        x.dtype(),
        grid(n * h, w * c),
        (THREADS, 1, 1),
        0,
        &[
            Arg::Ptr(x.device_ptr()),
            Arg::Ptr(y.device_ptr()),
            int(n * h),
            int(w),
            int(c),
            Arg::F32(scale),
        ],
    );
    y
}

/// `[n, 2ho, 2wo, c]` -> `[n, ho, wo, c]`, every output `scale` times the
/// sum of its 2x2 window.
fn sum2x2(x: &Tensor, scale: f32) -> Tensor {
    let (n, h, w, c) = x.nhwc();
    assert!(
        h % 2 == 0 && w % 2 == 0,
        "2x2 window sums of odd size {h}x{w}"
    );
    let (ho, wo) = (h / 2, w / 2);
    let y = Tensor::empty_cuda(&[n, ho, wo, c], x.dtype());
    opened().launch(
        "resample_sum2x2",
        x.dtype(),
        grid(n * ho, wo * c),
        (THREADS, 1, 1),
        0,
        &[
            Arg::Ptr(x.device_ptr()),
            Arg::Ptr(y.device_ptr()),
            int(n * ho),
            int(wo),
            int(c),
            Arg::F32(scale),
        ],
    );
    y
}

pub fn upsample2x(x: &Tensor) -> Tensor {
    up2x(x, 1.0)
}

/// Each input pixel collects the gradient of its four copies (`dy` has even
/// sides, being the gradient of an upsampled tensor).
pub fn upsample2x_backward(dy: &Tensor) -> Tensor {
    sum2x2(dy, 1.0)
}

pub fn avgpool2x(x: &Tensor) -> Tensor {
    let (_, h, w, _) = x.nhwc();
    assert!(h % 2 == 0 && w % 2 == 0, "2x2 pooling of odd size {h}x{w}");
    sum2x2(x, 0.25)
}

/// Each input pixel gets a quarter of its window's gradient.
pub fn avgpool2x_backward(dy: &Tensor) -> Tensor {
    up2x(dy, 0.25)
}

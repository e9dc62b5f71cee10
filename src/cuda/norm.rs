//! Group normalisation with an optional fused SiLU on device tensors
//! (kernels/norm.cu), twin of `cpu::norm`.
//!
//! x is NHWC, gamma and beta `[c]`; statistics per (image, group) in f32,
//! returned as an F32 tensor `[n, groups, 2]` of (mean, rstd) for the
//! backward. Every reduction over an image is split across `splits` CTAs
//! per image (see [`split`]), so a small batch still fills the GPU; the
//! partial results go through small f32 workspaces from the caching
//! allocator and are combined in a fixed order (deterministic, no atomics).
//! Forward: 2 launches; backward: 3.
//!
//! gamma and beta are read in x's type: if they are stored otherwise, a
//! converted copy is made first (the U-Net keeps them in the activation
//! type, so that copy is not made there). dgamma and dbeta come back in
//! f32 in either mode (parameter gradients reach the f32 master weights
//! unrounded).

use super::{int, opened, Arg};
use crate::tensor::{DType, Tensor};

/// Threads per block of every group-norm kernel.
const THREADS: u32 = 256;
/// CTAs the split aims for across the batch (about 4 per SM of an H100).
const TARGET_CTAS: usize = 512;
/// A CTA gets at least this many elements when the image allows it.
const MIN_ELEMS_PER_CTA: usize = 4096;
/// And at most this many pixels (bounds one thread's serial f32 sums).
const MAX_PIXELS_PER_CTA: usize = 4096;

/// `(splits, pixels per split)` for `n` images of `hw` pixels and `c`
/// channels: enough CTAs to fill the GPU at small batch, none too small,
/// none too large; every split holds at least one pixel.
pub(crate) fn split(n: usize, hw: usize, c: usize) -> (usize, usize) {
    if hw == 0 {
        return (1, 1);
    }
    let fill = TARGET_CTAS.div_ceil(n.max(1));
    let work = (hw * c / MIN_ELEMS_PER_CTA).max(1);
    let splits = fill
        .min(work)
        .max(hw.div_ceil(MAX_PIXELS_PER_CTA))
        .clamp(1, hw);
    let pps = hw.div_ceil(splits);
    (hw.div_ceil(pps), pps)
}

/// Pixel lanes times channels: the per-thread slots a CTA keeps in shared
/// memory (kernels/norm.cu, `lanes_of`).
fn slots(c: usize) -> usize {
    let t = THREADS as usize;
    if c <= t {
        (t / c.max(1)) * c
    } else {
        c
    }
}

fn block() -> (u32, u32, u32) {
    (THREADS, 1, 1)
}

fn ptr(t: &Tensor) -> Arg {
    Arg::Ptr(t.device_ptr())
}

/// gamma or beta in x's type: itself, or a converted copy held in `keep`.
fn as_type<'a>(t: &'a Tensor, dtype: DType, keep: &'a mut Option<Tensor>) -> &'a Tensor {
    if t.dtype() == dtype {
        t
    } else {
        keep.insert(super::elementwise::cast(t, dtype))
    }
}

fn check_shapes(x: &Tensor, gamma: &Tensor, beta: &Tensor, groups: usize) -> (usize, usize, usize) {
    let (n, h, w, c) = x.nhwc();
    assert!(
        groups > 0 && c % groups == 0,
        "{c} channels do not split into {groups} groups"
    );
    assert_eq!(gamma.numel(), c, "group norm gamma");
    assert_eq!(beta.numel(), c, "group norm beta");
    assert!(
        n < 65535,
        "group norm of {n} images: more than a grid holds"
    );
    (n, h * w, c)
}

/// Returns y (x's type) and the statistics, F32 `[n, groups, 2]` holding
/// (mean, rstd) per (image, group).
pub fn group_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    silu: bool,
) -> (Tensor, Tensor) {
    let (n, hw, c) = check_shapes(x, gamma, beta, groups);
    let dtype = x.dtype();
    let (mut g_copy, mut b_copy) = (None, None);
    let gamma = as_type(gamma, dtype, &mut g_copy);
    let beta = as_type(beta, dtype, &mut b_copy);
    let (splits, pps) = split(n, hw, c);
    let part = Tensor::empty_cuda(&[n, splits, groups, 3], DType::F32);
    let y = Tensor::empty_cuda(x.shape(), dtype);
    let stats = Tensor::empty_cuda(&[n, groups, 2], DType::F32);
    let grid = (splits as u32, n as u32, 1);
    let gpu = opened();
    gpu.launch(
        "group_norm_stats",
        dtype,
        grid,
        block(),
        (3 * slots(c) * 4) as u32,
        &[ptr(x), ptr(&part), int(hw), int(c), int(groups), int(pps)],
    );
    gpu.launch(
        "group_norm_apply",
        dtype,
        grid,
        block(),
        (2 * groups * 4) as u32,
        &[
            ptr(x),
            ptr(gamma),
            ptr(beta),
            ptr(&part),
            ptr(&y),
            ptr(&stats),
            int(hw),
            int(c),
            int(groups),
            int(pps),
            Arg::I32(silu as i32),
        ],
    );
    (y, stats)
}

/// Returns (dx, dgamma, dbeta): dx in x's type, dgamma and dbeta in f32. `stats` is the second result of [`group_norm`].
pub fn group_norm_backward(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    stats: &Tensor,
    dy: &Tensor,
    silu: bool,
) -> (Tensor, Tensor, Tensor) {
    assert_eq!(stats.dtype(), DType::F32, "group norm statistics are f32");
    assert_eq!(
        stats.shape().len(),
        3,
        "group norm statistics [n, groups, 2]"
    );
    let groups = stats.shape()[1];
    let (n, hw, c) = check_shapes(x, gamma, beta, groups);
    assert_eq!(stats.shape(), [n, groups, 2], "group norm statistics");
    assert_eq!(dy.shape(), x.shape(), "group norm dy");
    assert_eq!(dy.dtype(), x.dtype(), "group norm dy type");
    let dtype = x.dtype();
    let (mut g_copy, mut b_copy) = (None, None);
    let gamma_x = as_type(gamma, dtype, &mut g_copy);
    let beta_x = as_type(beta, dtype, &mut b_copy);
    let (splits, pps) = split(n, hw, c);
    let ws1 = Tensor::empty_cuda(&[n, splits, c, 2], DType::F32);
    let ws2 = Tensor::empty_cuda(&[n, c, 2], DType::F32);
    let dx = Tensor::empty_cuda(x.shape(), dtype);
    let dgamma = Tensor::empty_cuda(gamma.shape(), DType::F32);
    let dbeta = Tensor::empty_cuda(beta.shape(), DType::F32);
    let grid = (splits as u32, n as u32, 1);
    let silu = Arg::I32(silu as i32);
    let gpu = opened();
    gpu.launch(
        "group_norm_bwd_partial",
        dtype,
        grid,
        block(),
        (2 * slots(c) * 4) as u32,
        &[
            ptr(x),
            ptr(dy),
            ptr(gamma_x),
            ptr(beta_x),
            ptr(stats),
            ptr(&ws1),
            int(hw),
            int(c),
            int(groups),
            int(pps),
            silu,
        ],
    );
    gpu.launch_named(
        "group_norm_bwd_reduce",
        (c.div_ceil(32) as u32, n as u32 + 1, 1),
        block(),
        0,
        &[
            ptr(&ws1),
            ptr(&ws2),
            ptr(&dgamma),
            ptr(&dbeta),
            int(n),
            int(splits),
            int(c),
        ],
    );
    gpu.launch(
        "group_norm_bwd_apply",
        dtype,
        grid,
        block(),
        (4 * groups * 4) as u32,
        &[
            ptr(x),
            ptr(dy),
            ptr(gamma_x),
            ptr(beta_x),
            ptr(stats),
            ptr(&ws2),
            ptr(&dx),
            int(hw),
            int(c),
            int(groups),
            int(pps),
            silu,
        ],
    );
    (dx, dgamma, dbeta)
}

//! Convolution and linear layers on the device (kernels/conv.cu), twins of
//! `cpu::conv` and `cpu::linear` with the same signatures (the bias
//! gradient is `elementwise::sum_rows`).
//!
//! Every op is an implicit GEMM over 64 x 64 output tiles (no im2col
//! buffer): the forward over output pixels x cout, the input gradient over
//! input pixels x cin (one GEMM per stride phase), the weight gradient over
//! cout x (k*k*cin) reducing over output pixels, split across blocks when
//! the tile grid alone would leave the GPU idle (f32 partial sums, then
//! `conv_reduce_parts`). A linear layer is the 1x1 stride-1 convolution over
//! x seen as `[rows, 1, 1, in]`, so it runs the same kernels.
//!
//! All tensors of one call share a dtype, and so do the outputs but the
//! weight gradient, which is f32 in either mode (it feeds the optimizer's
//! f32 master weights unrounded): f32 runs plain FMA, bf16 the tensor
//! cores; both accumulate in f32. The kernels count pixels and weight
//! elements with `int` (each below 2^31, `check_index_range`) and offset
//! into activations with 64-bit arithmetic, so an activation may hold more
//! than 2^31 elements (adm256's skip concats at batch 64, 256 x 256).

use super::{blocks_for, int, opened, Arg};
use crate::cpu::conv::{ConvGeom, ConvGrads};
use crate::tensor::{DType, Tensor};

/// Output tile of one GEMM block (rows x columns of C) and K slice; these
/// must match `BM`, `BN`, `BK` and `THREADS` in kernels/conv.cu.
const TILE_M: usize = 64;
const TILE_N: usize = 64;
const TILE_K: usize = 32;
const THREADS: u32 = 256;
/// Blocks a split reduction aims for: a few waves of a 132-SM GPU.
const TARGET_BLOCKS: usize = 512;
/// A split reduces at least this many slices of TILE_K items.
const MIN_SLICES_PER_SPLIT: usize = 8;
/// Most splits (bounds the f32 partial-sum workspace).
const MAX_SPLITS: usize = 128;

fn ptr(t: &Tensor) -> Arg {
    Arg::Ptr(t.device_ptr())
}

/// The dtype all these device tensors share.
fn common_dtype(ts: &[&Tensor]) -> DType {
    let dtype = ts[0].dtype();
    for t in ts {
        assert!(t.is_cuda(), "{t:?}: the CUDA conv needs device tensors");
        assert_eq!(t.dtype(), dtype, "conv tensors of mixed types: {ts:?}");
    }
    dtype
}

/// Asserts that what the kernels count with `int` fits one: the input and
/// output pixel counts and the weight's elements (activation element
/// offsets are 64-bit, kernels/common.cuh `nhwc`).
fn check_index_range(g: &ConvGeom) {
    let counts = [
        ("input pixels", g.n * g.h * g.w),
        ("output pixels", g.n * g.ho * g.wo),
        ("weight elements", g.cout * g.patch_len()),
    ];
    for (what, n) in counts {
        assert!(
            i32::try_from(n).is_ok(),
            "conv of {g:?}: {n} {what} do not fit the kernels' 32-bit counts"
        );
    }
}

/// The geometry arguments the GEMM kernels take after their pointers.
fn geom_args(g: &ConvGeom) -> [Arg; 9] {
    [g.n, g.h, g.w, g.cin, g.cout, g.k, g.stride, g.ho, g.wo].map(int)
}

/// The grid of 64 x 64 tiles over a `rows x cols` result, `z` deep.
fn tile_grid(rows: usize, cols: usize, z: usize) -> (u32, u32, u32) {
    let dim = |n: usize, most: u32, what: &str| {
        let n = u32::try_from(n).ok().filter(|&n| n <= most);
        n.unwrap_or_else(|| panic!("conv grid: too many {what}"))
    };
    (
        dim(rows.div_ceil(TILE_M).max(1), i32::MAX as u32, "row tiles"),
        dim(cols.div_ceil(TILE_N).max(1), 65535, "column tiles"),
        dim(z.max(1), 65535, "splits"),
    )
}

/// How to split a reduction over `len` items between blocks when `tiles`
/// blocks already cover the output: (splits, items per split, a multiple
/// of TILE_K). Every split gets at least one item unless `len` is 0.
fn split(len: usize, tiles: usize) -> (usize, usize) {
    let most = len.div_ceil(TILE_K * MIN_SLICES_PER_SPLIT).max(1);
    let want = TARGET_BLOCKS.div_ceil(tiles.max(1));
    let splits = want.min(most).clamp(1, MAX_SPLITS);
    let chunk = len.div_ceil(splits).div_ceil(TILE_K).max(1) * TILE_K;
    (len.div_ceil(chunk).max(1), chunk)
}

/// An f32 workspace for `parts` partial results of `count` values each.
fn partials(parts: usize, count: usize) -> Tensor {
    let n = parts * count;
    assert!(i32::try_from(n).is_ok(), "conv partial sums of {n} values");
    Tensor::empty_cuda(&[n], DType::F32)
}

/// `out = sum of the parts` (`conv_reduce_parts`, f32).
fn launch_reduce_parts(part: &Tensor, out: &Tensor, parts: usize) {
    let count = out.numel();
    opened().launch_named(
        "conv_reduce_parts",
        blocks_for(count.min(65535 * THREADS as usize), THREADS),
        (THREADS, 1, 1),
        0,
        &[ptr(part), ptr(out), int(count), int(parts)],
    );
}

/// `y = conv(x, w) + bias` (`conv_fwd`): tiles over output pixels x cout.
fn launch_forward(g: &ConvGeom, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, y: &Tensor) {
    let mut args = vec![
        ptr(x),
        ptr(w),
        Arg::Ptr(bias.map_or(0, Tensor::device_ptr)),
        ptr(y),
    ];
    args.extend(geom_args(g));
    opened().launch(
        "conv_fwd",
        x.dtype(),
        tile_grid(g.n * g.ho * g.wo, g.cout, 1),
        (THREADS, 1, 1),
        0,
        &args,
    );
}

/// `dx` (`conv_dgrad`): grid.z is the stride phase (iy % s, ix % s); x
/// covers the largest phase, (0, 0), whose rows are ceil(h / s).
fn launch_dgrad(g: &ConvGeom, dy: &Tensor, w: &Tensor, dx: &Tensor) {
    let phase_pixels = g.n * g.h.div_ceil(g.stride) * g.w.div_ceil(g.stride);
    let mut args = vec![ptr(dy), ptr(w), ptr(dx)];
    args.extend(geom_args(g));
    opened().launch(
        "conv_dgrad",
        dy.dtype(),
        tile_grid(phase_pixels, g.cin, g.stride * g.stride),
        (THREADS, 1, 1),
        0,
        &args,
    );
}

/// `dw` (`conv_wgrad`, always f32): tiles over cout x patch length, the
/// output pixels split over grid.z (into f32 partials, then summed) when
/// that is needed to fill the GPU.
fn launch_wgrad(g: &ConvGeom, x: &Tensor, dy: &Tensor, dw: &Tensor) {
    let pixels = g.n * g.ho * g.wo;
    let grid = tile_grid(g.cout, g.patch_len(), 1);
    let (splits, chunk) = split(pixels, grid.0 as usize * grid.1 as usize);
    let part = (splits > 1).then(|| partials(splits, dw.numel()));
    let mut args = vec![
        ptr(x),
        ptr(dy),
        ptr(dw),
        Arg::Ptr(part.as_ref().map_or(0, Tensor::device_ptr)),
    ];
    args.extend(geom_args(g));
    args.push(int(chunk));
    opened().launch(
        "conv_wgrad",
        x.dtype(),
        (grid.0, grid.1, splits as u32),
        (THREADS, 1, 1),
        0,
        &args,
    );
    if let Some(part) = &part {
        launch_reduce_parts(part, dw, splits);
    }
}

pub fn conv2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, stride: usize) -> Tensor {
    let g = ConvGeom::new(x, weight, stride);
    let mut all = vec![x, weight];
    all.extend(bias);
    let dtype = common_dtype(&all);
    if let Some(b) = bias {
        assert_eq!(b.shape(), [g.cout], "conv bias for {} channels", g.cout);
    }
    check_index_range(&g);
    let y = Tensor::empty_cuda(&[g.n, g.ho, g.wo, g.cout], dtype);
    launch_forward(&g, x, weight, bias, &y);
    y
}

/// Gradients of `conv2d` with respect to input, weight and bias; each is
/// computed only when asked for.
pub fn conv2d_backward(
    x: &Tensor,
    weight: &Tensor,
    dy: &Tensor,
    stride: usize,
    need: [bool; 3],
) -> ConvGrads {
    let g = ConvGeom::new(x, weight, stride);
    let dtype = common_dtype(&[x, weight, dy]);
    assert_eq!(dy.shape(), [g.n, g.ho, g.wo, g.cout], "conv dy for {g:?}");
    check_index_range(&g);
    let dx = need[0].then(|| {
        let dx = Tensor::empty_cuda(x.shape(), dtype);
        launch_dgrad(&g, dy, weight, &dx);
        dx
    });
    let dw = need[1].then(|| {
        let dw = Tensor::empty_cuda(weight.shape(), DType::F32);
        launch_wgrad(&g, x, dy, &dw);
        dw
    });
    ConvGrads {
        dx,
        dw,
        db: need[2].then(|| super::elementwise::sum_rows(dy)),
    }
}

/// The 1x1 stride-1 convolution that a linear layer `[rows, inp] -> [rows,
/// out]` is.
fn pointwise(rows: usize, inp: usize, out: usize) -> ConvGeom {
    ConvGeom {
        n: rows,
        h: 1,
        w: 1,
        cin: inp,
        cout: out,
        k: 1,
        stride: 1,
        pad: 0,
        ho: 1,
        wo: 1,
    }
}

/// The geometry of `linear(x, weight)` (checking the shapes) and y's shape.
fn linear_geom(x: &Tensor, weight: &Tensor) -> (ConvGeom, Vec<usize>) {
    let shape = crate::cpu::linear::out_shape(x, weight);
    let (rows, inp) = x.rows_cols();
    let g = pointwise(rows, inp, weight.shape()[0]);
    check_index_range(&g);
    (g, shape)
}

/// `y = x W^T + b` over the last dimension (W `[out, in]`).
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
    let (g, shape) = linear_geom(x, weight);
    let mut all = vec![x, weight];
    all.extend(bias);
    let dtype = common_dtype(&all);
    if let Some(b) = bias {
        assert_eq!(b.shape(), [g.cout], "linear bias for {} outputs", g.cout);
    }
    let y = Tensor::empty_cuda(&shape, dtype);
    launch_forward(&g, x, weight, bias, &y);
    y
}

/// Returns (dx, dW) where asked for; the bias gradient is
/// `elementwise::sum_rows(dy)`.
pub fn linear_backward(
    x: &Tensor,
    weight: &Tensor,
    dy: &Tensor,
    need_dx: bool,
    need_dw: bool,
) -> (Option<Tensor>, Option<Tensor>) {
    let (g, shape) = linear_geom(x, weight);
    let dtype = common_dtype(&[x, weight, dy]);
    assert_eq!(
        dy.shape(),
        &shape[..],
        "linear dy for input {:?}",
        x.shape()
    );
    let dx = need_dx.then(|| {
        let dx = Tensor::empty_cuda(x.shape(), dtype);
        launch_dgrad(&g, dy, weight, &dx);
        dx
    });
    let dw = need_dw.then(|| {
        let dw = Tensor::empty_cuda(weight.shape(), DType::F32);
        launch_wgrad(&g, x, dy, &dw);
        dw
    });
    (dx, dw)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3x3 stride-1 convolution of `n` images of `hw x hw` pixels.
    fn geom(n: usize, hw: usize, cin: usize, cout: usize) -> ConvGeom {
        ConvGeom {
            n,
            h: hw,
            w: hw,
            cin,
            cout,
            k: 3,
            stride: 1,
            pad: 1,
            ho: hw,
            wo: hw,
        }
    }

    /// adm256's first decoder conv at 256 x 256 takes the 512-channel skip
    /// concat: 2^31 input elements at batch 64, 2^32 at batch 128. Both
    /// fit the kernels' index math (no GPU, nothing allocated).
    #[test]
    fn adm256_skip_concat_past_2_pow_31_elements_fits() {
        for n in [64, 128] {
            let g = geom(n, 256, 512, 256);
            assert!(g.n * g.h * g.w * g.cin >= 1 << 31);
            check_index_range(&g);
            // The grid of the forward and the backward fits too.
            tile_grid(g.n * g.ho * g.wo, g.cout, 1);
            tile_grid(g.n * g.h * g.w, g.cin, 1);
        }
    }

    #[test]
    #[should_panic(expected = "input pixels do not fit the kernels' 32-bit counts")]
    fn pixel_counts_past_2_pow_31_are_refused() {
        check_index_range(&geom(1 << 15, 256, 8, 8));
    }
}

//! Element-wise ops on device tensors (kernels/elementwise.cu), twins of
//! `cpu::elementwise` (silu, add, scale_shift, concat and their
//! backwards), `cpu::embed` (the timestep embedding) and `cpu::sum_rows`,
//! plus the tensor plumbing: copy, fill, cast, axpy.
//!
//! Every op takes and returns device tensors of one dtype (f32 or bf16),
//! with the CPU twin's signature, except `sum_rows` (a bias gradient, f32
//! in either mode); the kernels compute in f32. The column
//! sums (`sum_rows`, the `dss` of `scale_shift_backward`) run in two
//! deterministic passes through an f32 scratch of per-chunk partial sums.
//! The timestep embedding reads `t` as f32 (a bf16 `t` is widened first).

use super::{int, opened, Arg};
use crate::tensor::{DType, Tensor};

/// Threads per block of the element-wise kernels (and of the reductions).
const THREADS: u32 = 256;
/// Grid cap: grid-stride loops cover the rest.
const MAX_BLOCKS: usize = 65535;
/// The reductions cut their rows into chunks of at least this many...
const MIN_CHUNK_ROWS: usize = 256;
/// ...aiming at about this many blocks in their first pass.
const TARGET_BLOCKS: usize = 1024;
/// Threads per row of the timestep embedding's backward.
const EMBED_BACKWARD_THREADS: u32 = 128;

/// A 1-D grid over `n` elements.
pub(crate) fn grid(n: usize) -> (u32, u32, u32) {
    (
        n.div_ceil(THREADS as usize).clamp(1, MAX_BLOCKS) as u32,
        1,
        1,
    )
}

pub(crate) fn block() -> (u32, u32, u32) {
    (THREADS, 1, 1)
}

fn len(n: usize) -> Arg {
    Arg::U64(n as u64)
}

fn ptr(t: &Tensor) -> Arg {
    Arg::Ptr(t.device_ptr())
}

fn same_dtype(what: &str, a: &Tensor, b: &Tensor) {
    assert_eq!(a.dtype(), b.dtype(), "{what} of mixed types");
}

fn grid_dim(n: usize) -> u32 {
    u32::try_from(n).expect("grid dimension fits u32")
}

/// A reduction block over `c` columns: `bx` = min(32, c rounded up to a
/// power of two) columns by `THREADS / bx` row lanes (a power of two);
/// the kernels' shared arrays hold `REDUCE_THREADS` = `THREADS` = 256.
fn reduction_block(c: usize) -> (u32, u32, u32) {
    let bx = c.next_power_of_two().min(32) as u32;
    (bx, THREADS / bx, 1)
}

/// (chunks, rows per chunk) for a first pass over `rows` rows that has
/// `other_blocks` blocks per chunk: chunks of at least `MIN_CHUNK_ROWS`
/// rows, about `TARGET_BLOCKS` blocks in all, none empty. Depends only on
/// the shape, so the sums are deterministic.
fn chunks(rows: usize, other_blocks: usize) -> (usize, usize) {
    let wanted = (TARGET_BLOCKS / other_blocks.max(1)).max(1);
    let count = rows
        .div_ceil(MIN_CHUNK_ROWS)
        .clamp(1, wanted.min(MAX_BLOCKS));
    let per = rows.div_ceil(count).max(1);
    (rows.div_ceil(per).max(1), per)
}

/// Copies `bytes` from one device address to another, on the stream.
pub fn copy(src: u64, dst: u64, bytes: usize) {
    opened().copy(src, dst, bytes);
}

/// Sets every element to `value`.
pub fn fill(t: &Tensor, value: f32) {
    let n = t.numel();
    opened().launch(
        "fill",
        t.dtype(),
        grid(n),
        block(),
        0,
        &[ptr(t), len(n), Arg::F32(value)],
    );
}

/// `y += alpha * x`.
pub fn axpy(y: &mut Tensor, alpha: f32, x: &Tensor) {
    same_dtype("axpy", y, x);
    assert_eq!(y.numel(), x.numel(), "axpy size mismatch");
    let n = y.numel();
    opened().launch(
        "axpy",
        y.dtype(),
        grid(n),
        block(),
        0,
        &[ptr(y), ptr(x), len(n), Arg::F32(alpha)],
    );
}

/// A copy of a device tensor stored as `dtype`.
pub fn cast(x: &Tensor, dtype: DType) -> Tensor {
    if x.dtype() == dtype {
        return x.clone();
    }
    let y = Tensor::empty_cuda(x.shape(), dtype);
    let kernel = match dtype {
        DType::Bf16 => "cast_f32_to_bf16",
        DType::F32 => "cast_bf16_to_f32",
    };
    let n = x.numel();
    opened().launch_named(kernel, grid(n), block(), 0, &[ptr(x), ptr(&y), len(n)]);
    y
}

pub fn silu(x: &Tensor) -> Tensor {
    let y = Tensor::empty_cuda(x.shape(), x.dtype());
    let n = x.numel();
    opened().launch(
        "silu",
        x.dtype(),
        grid(n),
        block(),
        0,
        &[ptr(x), ptr(&y), len(n)],
    );
    y
}

pub fn silu_backward(x: &Tensor, dy: &Tensor) -> Tensor {
    same_dtype("silu_backward", x, dy);
    assert_eq!(x.numel(), dy.numel(), "silu_backward size mismatch");
    let dx = Tensor::empty_cuda(x.shape(), x.dtype());
    let n = x.numel();
    opened().launch(
        "silu_backward",
        x.dtype(),
        grid(n),
        block(),
        0,
        &[ptr(x), ptr(dy), ptr(&dx), len(n)],
    );
    dx
}

pub fn add(a: &Tensor, b: &Tensor) -> Tensor {
    assert_eq!(a.shape(), b.shape(), "add shape mismatch");
    same_dtype("add", a, b);
    let y = Tensor::empty_cuda(a.shape(), a.dtype());
    let n = a.numel();
    opened().launch(
        "add",
        a.dtype(),
        grid(n),
        block(),
        0,
        &[ptr(a), ptr(b), ptr(&y), len(n)],
    );
    y
}

/// Whether `ss` carries a scale (2c channels) or only a shift (c channels).
fn modulation(x: &Tensor, ss: &Tensor) -> (usize, bool) {
    same_dtype("scale_shift", x, ss);
    crate::cpu::elementwise::modulation(x, ss)
}

/// `x * (1 + scale) + shift` per image and channel (`ss` `[n, 2c]`), or
/// `x + shift` (`ss` `[n, c]`).
pub fn scale_shift(x: &Tensor, ss: &Tensor) -> Tensor {
    let (c, has_scale) = modulation(x, ss);
    let (_, h, w, _) = x.nhwc();
    let y = Tensor::empty_cuda(x.shape(), x.dtype());
    let n = x.numel();
    opened().launch(
        "scale_shift",
        x.dtype(),
        grid(n),
        block(),
        0,
        &[
            ptr(x),
            ptr(ss),
            ptr(&y),
            len(n),
            int(c),
            len(h * w * c),
            Arg::I32(has_scale as i32),
        ],
    );
    y
}

/// Returns (dx, dss).
pub fn scale_shift_backward(x: &Tensor, ss: &Tensor, dy: &Tensor) -> (Tensor, Tensor) {
    let (c, has_scale) = modulation(x, ss);
    assert_eq!(x.shape(), dy.shape(), "scale_shift_backward shape mismatch");
    same_dtype("scale_shift_backward", x, dy);
    let (n, h, w, _) = x.nhwc();
    let dtype = x.dtype();
    let dx = Tensor::empty_cuda(x.shape(), dtype);
    let dss = Tensor::empty_cuda(ss.shape(), dtype);
    let block = reduction_block(c);
    let col_blocks = c.div_ceil(block.0 as usize);
    let (count, per) = chunks(h * w, col_blocks * n);
    let partial = Tensor::empty_cuda(&[count, ss.numel()], DType::F32);
    opened().launch(
        "scale_shift_backward",
        dtype,
        (grid_dim(col_blocks), grid_dim(count), grid_dim(n)),
        block,
        0,
        &[
            ptr(x),
            ptr(ss),
            ptr(dy),
            ptr(&dx),
            ptr(&partial),
            int(c),
            len(h * w),
            len(per),
            Arg::I32(has_scale as i32),
        ],
    );
    sum_partials(&partial, count, &dss);
    (dx, dss)
}

/// Channel concatenation `[n, h, w, ca] ++ [n, h, w, cb]` (the U-Net's skips).
pub fn concat(a: &Tensor, b: &Tensor) -> Tensor {
    let (n, h, w, ca) = a.nhwc();
    let (nb, hb, wb, cb) = b.nhwc();
    assert_eq!((n, h, w), (nb, hb, wb), "concat of mismatched images");
    same_dtype("concat", a, b);
    let y = Tensor::empty_cuda(&[n, h, w, ca + cb], a.dtype());
    let total = y.numel();
    opened().launch(
        "concat",
        a.dtype(),
        grid(total),
        block(),
        0,
        &[ptr(a), ptr(b), ptr(&y), len(total), int(ca), int(cb)],
    );
    y
}

/// Splits a gradient of `concat` back into its two parts.
pub fn concat_backward(dy: &Tensor, ca: usize) -> (Tensor, Tensor) {
    let (n, h, w, c) = dy.nhwc();
    assert!(ca <= c, "concat_backward: {ca} channels of {c}");
    let cb = c - ca;
    let da = Tensor::empty_cuda(&[n, h, w, ca], dy.dtype());
    let db = Tensor::empty_cuda(&[n, h, w, cb], dy.dtype());
    let total = dy.numel();
    opened().launch(
        "concat_backward",
        dy.dtype(),
        grid(total),
        block(),
        0,
        &[ptr(dy), ptr(&da), ptr(&db), len(total), int(ca), int(cb)],
    );
    (da, db)
}

/// `t` as an f32 device tensor (borrowed when it already is one).
fn widened(t: &Tensor) -> std::borrow::Cow<'_, Tensor> {
    match t.dtype() {
        DType::F32 => std::borrow::Cow::Borrowed(t),
        DType::Bf16 => std::borrow::Cow::Owned(cast(t, DType::F32)),
    }
}

/// ADM's sinusoidal embedding of `t` (`[n]`) as `[n, dim]` stored as
/// `dtype` (the network's), computed from `t` read as f32 (keep `t` in
/// f32 for a bf16 network: bf16 rounds 999 to 1000). The CPU twin has no
/// `dtype`: the host is f32.
pub fn timestep_embedding(t: &Tensor, dim: usize, dtype: DType) -> Tensor {
    assert!(
        dim.is_multiple_of(2),
        "time embedding width {dim} must be even"
    );
    let n = t.numel();
    let half = dim / 2;
    let t = widened(t);
    let y = Tensor::empty_cuda(&[n, dim], dtype);
    opened().launch(
        "timestep_embedding",
        dtype,
        grid(n * half),
        block(),
        0,
        &[ptr(&t), ptr(&y), int(n), int(half)],
    );
    y
}

/// The derivative with respect to `t`, with `t`'s shape and dtype.
pub fn timestep_embedding_backward(t: &Tensor, dy: &Tensor) -> Tensor {
    let n = t.numel();
    let width = dy.shape()[1];
    assert_eq!(dy.shape(), [n, width], "time embedding gradient shape");
    let tf = widened(t);
    let dt = Tensor::empty_cuda(t.shape(), DType::F32);
    opened().launch(
        "timestep_embedding_backward",
        dy.dtype(),
        (grid_dim(n), 1, 1),
        (EMBED_BACKWARD_THREADS, 1, 1),
        0,
        &[ptr(&tf), ptr(dy), ptr(&dt), int(n), int(width / 2)],
    );
    match t.dtype() {
        DType::F32 => dt,
        other => cast(&dt, other),
    }
}

/// Sums a `[.., c]` tensor over everything but its last dimension (the
/// gradient of a bias broadcast over rows): `[c]`, summed and stored in
/// f32 (in either mode: a parameter gradient reaches the f32 master
/// weights unrounded) in a fixed order.
pub fn sum_rows(t: &Tensor) -> Tensor {
    let (rows, c) = t.rows_cols();
    let block = reduction_block(c);
    let col_blocks = c.div_ceil(block.0 as usize);
    let (count, per) = chunks(rows, col_blocks);
    let partial = Tensor::empty_cuda(&[count, c], DType::F32);
    opened().launch(
        "sum_rows_partial",
        t.dtype(),
        (grid_dim(col_blocks), grid_dim(count), 1),
        block,
        0,
        &[ptr(t), ptr(&partial), len(rows), int(c), len(per)],
    );
    let y = Tensor::empty_cuda(&[c], DType::F32);
    sum_partials(&partial, count, &y);
    y
}

/// Pass 2 of the column sums: `y[col]` = sum over the `count` rows of the
/// f32 `partial` `[count, c]`, stored as `y`'s dtype (`y` holds c values).
fn sum_partials(partial: &Tensor, count: usize, y: &Tensor) {
    let c = y.numel();
    assert_eq!(partial.numel(), count * c, "sum_partials sizes");
    let block = reduction_block(c);
    opened().launch(
        "sum_partials",
        y.dtype(),
        (grid_dim(c.div_ceil(block.0 as usize)), 1, 1),
        block,
        0,
        &[ptr(partial), ptr(y), int(count), int(c)],
    );
}

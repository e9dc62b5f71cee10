//! Multi-head self-attention over pixels on the device
//! (kernels/attention.cu), twin of `cpu::attention`: same layout (`qkv` is
//! `[n, h, w, 3c]` in ADM's legacy per-head `[q, k, v]` order, the output
//! `[n, h, w, c]`), same scale `1/sqrt(head_dim)`.
//!
//! Flash style: the forward never forms the tokens x tokens matrix and
//! returns, instead of the CPU's probabilities, the log-sum-exp of every
//! query row (`[n, heads, tokens]`, always f32), from which the backward
//! recomputes them (FlashAttention-2, without atomics: a delta kernel, a
//! dK/dV kernel over key tiles and a dQ kernel over query tiles).
//!
//! Head dims 32 and 64 have kernels; any other records an error on the
//! device (the results are then undefined, and the next check reports it).

use super::{int, opened, Arg};
use crate::cpu::attention::{geometry, Geometry};
use crate::tensor::{DType, Tensor};

/// Threads per CTA of the tiled kernels (kernels/attention.cu: THREADS).
const THREADS: u32 = 128;
/// Queries (and keys) per tile (BM, BN).
const TILE: usize = 64;
/// Padded shared-memory strides of the kernels (LD4, LD1).
const LD4: usize = 68;
const LD1: usize = 65;
/// Rows (one warp each) per block of the delta kernel.
const DELTA_WARPS: u32 = 8;
/// Largest grid y and z.
const GRID_YZ: usize = 65535;

/// Shared bytes of the forward (`fwd_smem_floats` in the kernel file).
fn fwd_smem(d: usize) -> u32 {
    (4 * (d * LD4 + TILE * LD4 + d * LD1 + TILE * d)) as u32
}

/// Shared bytes of the dK/dV kernel (`dkdv_smem_floats`).
fn dkdv_smem(d: usize) -> u32 {
    (4 * (2 * d * LD4 + 2 * TILE * LD4 + 2 * d * LD1 + 2 * TILE)) as u32
}

/// Shared bytes of the dQ kernel (`dq_smem_floats`).
fn dq_smem(d: usize) -> u32 {
    (4 * (2 * d * LD4 + TILE * LD4 + 2 * d * LD1)) as u32
}

/// The tiled kernels' grid (tiles, heads, images), or `None` after
/// recording why there is no kernel for this shape.
fn tile_grid(g: &Geometry) -> Option<(u32, u32, u32)> {
    let gpu = opened();
    if !matches!(g.hd, 32 | 64) {
        gpu.fail(format!(
            "attention: no kernel for head_dim {} (32 and 64 are built)",
            g.hd
        ));
        return None;
    }
    if g.heads > GRID_YZ || g.n > GRID_YZ || i32::try_from(g.tokens).is_err() {
        gpu.fail(format!(
            "attention: {} images x {} heads x {} tokens exceed the kernels' grid",
            g.n, g.heads, g.tokens
        ));
        return None;
    }
    Some((g.tokens.div_ceil(TILE) as u32, g.heads as u32, g.n as u32))
}

/// `out` and the log-sum-exp `lse` of `softmax(q k^T * scale) v`.
/// The kernel of `names` (head dim 32, head dim 64) for this call; other
/// head dims never reach a launch (`tile_grid` refuses them).
fn by_head_dim(g: &Geometry, names: [&'static str; 2]) -> &'static str {
    if g.hd == 32 {
        names[0]
    } else {
        names[1]
    }
}

fn launch_forward(qkv: &Tensor, out: &Tensor, lse: &Tensor, g: &Geometry, grid: (u32, u32, u32)) {
    opened().launch(
        by_head_dim(g, ["attention_fwd_hd32", "attention_fwd_hd64"]),
        qkv.dtype(),
        grid,
        (THREADS, 1, 1),
        fwd_smem(g.hd),
        &[
            Arg::Ptr(qkv.device_ptr()),
            Arg::Ptr(out.device_ptr()),
            Arg::Ptr(lse.device_ptr()),
            int(g.tokens),
            int(g.heads),
            Arg::F32(g.scale),
        ],
    );
}

/// `delta = rowsum(dy * out)` per (image, head, token), f32.
fn launch_delta(out: &Tensor, dy: &Tensor, delta: &Tensor, g: &Geometry) {
    let rows = g.n * g.tokens * g.heads;
    opened().launch(
        "attention_bwd_delta",
        out.dtype(),
        (rows.div_ceil(DELTA_WARPS as usize) as u32, 1, 1),
        (32 * DELTA_WARPS, 1, 1),
        0,
        &[
            Arg::Ptr(out.device_ptr()),
            Arg::Ptr(dy.device_ptr()),
            Arg::Ptr(delta.device_ptr()),
            int(g.tokens),
            int(g.heads),
            int(g.hd),
            Arg::U64(rows as u64),
        ],
    );
}

/// The backward kernels' common arguments.
fn backward_args(
    qkv: &Tensor,
    dy: &Tensor,
    lse: &Tensor,
    delta: &Tensor,
    dqkv: &Tensor,
    g: &Geometry,
) -> [Arg; 8] {
    [
        Arg::Ptr(qkv.device_ptr()),
        Arg::Ptr(dy.device_ptr()),
        Arg::Ptr(lse.device_ptr()),
        Arg::Ptr(delta.device_ptr()),
        Arg::Ptr(dqkv.device_ptr()),
        int(g.tokens),
        int(g.heads),
        Arg::F32(g.scale),
    ]
}

/// The dK and dV channels of `dqkv`, one CTA per key tile.
fn launch_dkdv(args: &[Arg; 8], dtype: DType, g: &Geometry, grid: (u32, u32, u32)) {
    opened().launch(
        by_head_dim(g, ["attention_bwd_dkdv_hd32", "attention_bwd_dkdv_hd64"]),
        dtype,
        grid,
        (THREADS, 1, 1),
        dkdv_smem(g.hd),
        args,
    );
}

/// The dQ channels of `dqkv`, one CTA per query tile.
fn launch_dq(args: &[Arg; 8], dtype: DType, g: &Geometry, grid: (u32, u32, u32)) {
    opened().launch(
        by_head_dim(g, ["attention_bwd_dq_hd32", "attention_bwd_dq_hd64"]),
        dtype,
        grid,
        (THREADS, 1, 1),
        dq_smem(g.hd),
        args,
    );
}

/// Self-attention of `qkv` (`[n, h, w, 3c]`): the output (`[n, h, w, c]`,
/// qkv's dtype) and the log-sum-exp of each query row's scaled scores
/// (`[n, heads, h*w]`, f32), which the backward takes.
pub fn attention(qkv: &Tensor, head_dim: usize) -> (Tensor, Tensor) {
    let g = geometry(qkv, head_dim);
    let mut shape = qkv.shape().to_vec();
    shape[3] = g.c;
    let out = Tensor::empty_cuda(&shape, qkv.dtype());
    let lse = Tensor::empty_cuda(&[g.n, g.heads, g.tokens], DType::F32);
    if let Some(grid) = tile_grid(&g) {
        launch_forward(qkv, &out, &lse, &g, grid);
    }
    (out, lse)
}

/// The gradient with respect to `qkv` (its layout and dtype), given the
/// forward's `out` and `lse` and the output gradient `dy`.
pub fn attention_backward(
    qkv: &Tensor,
    out: &Tensor,
    lse: &Tensor,
    dy: &Tensor,
    head_dim: usize,
) -> Tensor {
    let g = geometry(qkv, head_dim);
    let mut shape = qkv.shape().to_vec();
    shape[3] = g.c;
    assert_eq!(out.shape(), &shape[..], "attention_backward: output shape");
    assert_eq!(dy.shape(), &shape[..], "attention_backward: gradient shape");
    assert_eq!(
        lse.shape(),
        &[g.n, g.heads, g.tokens],
        "attention_backward: lse shape"
    );
    assert_eq!(lse.dtype(), DType::F32, "attention_backward: lse is f32");
    assert!(
        out.dtype() == qkv.dtype() && dy.dtype() == qkv.dtype(),
        "attention_backward of mixed types"
    );
    let dqkv = Tensor::empty_cuda(qkv.shape(), qkv.dtype());
    if let Some(grid) = tile_grid(&g) {
        let delta = Tensor::empty_cuda(&[g.n, g.heads, g.tokens], DType::F32);
        launch_delta(out, dy, &delta, &g);
        let args = backward_args(qkv, dy, lse, &delta, &dqkv, &g);
        launch_dkdv(&args, qkv.dtype(), &g, grid);
        launch_dq(&args, qkv.dtype(), &g, grid);
        // `delta` goes back to the pool here: later work on the stream is
        // ordered after these kernels.
    }
    dqkv
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte counts the kernel file's `*_smem_floats` give (checked
    /// against it on the host; a launch with less traps).
    #[test]
    fn shared_memory_matches_the_kernels() {
        assert_eq!(
            (fwd_smem(32), dkdv_smem(32), dq_smem(32)),
            (42624, 69376, 51456)
        );
        assert_eq!(
            (fwd_smem(64), dkdv_smem(64), dq_smem(64)),
            (67840, 103424, 85504)
        );
    }
}

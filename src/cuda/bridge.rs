//! The bridges' fused element-wise ops and the MSE loss on device tensors
//! (kernels/bridge.cu), twins of `cpu::bridge` and `cpu::loss` with the
//! same signatures, except that:
//!
//! - `posterior_step` takes its seed from a [`SeedCell`] (one u64 in device
//!   memory) read by the kernel when it runs, so that a captured CUDA graph
//!   of a sampling step can be replayed under another seed: `set` the cell,
//!   then replay;
//! - `mse` returns a `[1]` F32 device tensor and `mse_backward` takes
//!   `dloss` as a one-element device tensor, so a training step never waits
//!   for the host.
//!
//! The noise is drawn in-kernel with the Philox generator of `rng` (element
//! i of the flat batch is `rng::normal(seed, stream, i)`), so a GPU run and a
//! CPU run of the same seed agree; in f32 the outputs match the CPU bit for
//! bit but for the rare Box-Muller rounding difference (see `rng`).
//! Reductions are deterministic (fixed grids, fixed summation order).

use super::elementwise::{block, grid};
use super::memory::DeviceBuffer;
use super::{opened, Arg};
use crate::cpu::bridge::{Combo, StepCoeffs};
use crate::rng::Stream;
use crate::tensor::{DType, Tensor};

/// Threads per block of the MSE reduction (a multiple of 32).
const REDUCE_THREADS: u32 = 256;
/// Most blocks of the MSE's first pass (so the partials fit one block).
const REDUCE_BLOCKS: usize = 1024;
/// Elements per thread the MSE's grid aims at before it hits the cap.
const REDUCE_PER_THREAD: usize = 4;

fn len(n: usize) -> Arg {
    Arg::U64(n as u64)
}

/// `(xt, target)` for a batch of NHWC images (any shape whose first axis is
/// the batch); `per_image[b] = (xt coefficients, target coefficients)`. The
/// outputs have the type of `x0`.
pub fn training_pair(
    x0: &Tensor,
    e: &Tensor,
    per_image: &[(Combo, Combo)],
    seed: u64,
    stream: Stream,
) -> (Tensor, Tensor) {
    assert_eq!(x0.shape(), e.shape(), "bridge endpoints differ in shape");
    assert_eq!(x0.dtype(), e.dtype(), "bridge endpoints differ in type");
    let batch = x0.shape()[0];
    assert_eq!(per_image.len(), batch, "one coefficient pair per image");
    let dtype = x0.dtype();
    let xt = Tensor::empty_cuda(x0.shape(), dtype);
    let target = Tensor::empty_cuda(x0.shape(), dtype);
    let n = x0.numel();
    if n == 0 {
        return (xt, target);
    }
    let image = n / batch;
    let coeffs: Vec<f32> = per_image
        .iter()
        .flat_map(|(p, q)| [p.x0, p.e, p.z, q.x0, q.e, q.z])
        .collect();
    let gpu = opened();
    // Back to the pool when this returns: every later use of the buffer is
    // queued on the same stream, after this launch.
    let table = gpu.pool.alloc(std::mem::size_of_val(&coeffs[..]));
    gpu.upload_raw(&coeffs, table.ptr());
    gpu.launch(
        "training_pair",
        dtype,
        grid(n.div_ceil(4)),
        block(),
        0,
        &[
            Arg::Ptr(x0.device_ptr()),
            Arg::Ptr(e.device_ptr()),
            Arg::Ptr(table.ptr()),
            Arg::Ptr(xt.device_ptr()),
            Arg::Ptr(target.device_ptr()),
            len(n),
            len(image),
            Arg::U64(seed),
            Arg::U64(stream.id()),
        ],
    );
    (xt, target)
}

/// A seed in device memory (8 bytes), read by `posterior_step`'s kernel when
/// it runs. `set` queues the upload on the stream, so launches queued before
/// it see the old seed and launches queued after it the new one; call it
/// outside graph capture (a captured upload would replay the old value).
/// The GPU must be open (`cuda::gpu()`).
#[derive(Debug)]
pub struct SeedCell {
    buf: DeviceBuffer,
}

impl SeedCell {
    /// A cell holding seed 0.
    pub fn new() -> SeedCell {
        let cell = SeedCell {
            buf: opened().pool.alloc(std::mem::size_of::<u64>()),
        };
        cell.set(0);
        cell
    }

    pub fn set(&self, seed: u64) {
        opened().upload_raw(&[seed], self.buf.ptr());
    }

    /// The device address of the seed (one `unsigned long long`).
    pub fn ptr(&self) -> u64 {
        self.buf.ptr()
    }
}

impl Default for SeedCell {
    fn default() -> SeedCell {
        SeedCell::new()
    }
}

/// `x' = s.out out + s.x x + s.e e + s.noise z`, `z` element i of `stream`
/// under the seed in `seed` at run time (no noise drawn when `s.noise` is
/// 0). The output has the type of `x`.
pub fn posterior_step(
    out: &Tensor,
    x: &Tensor,
    e: &Tensor,
    s: StepCoeffs,
    seed: &SeedCell,
    stream: Stream,
) -> Tensor {
    assert!(
        out.shape() == x.shape() && x.shape() == e.shape(),
        "posterior shapes differ"
    );
    assert!(
        out.dtype() == x.dtype() && x.dtype() == e.dtype(),
        "posterior types differ"
    );
    let next = Tensor::empty_cuda(x.shape(), x.dtype());
    let n = x.numel();
    opened().launch(
        "posterior_step",
        x.dtype(),
        grid(n.div_ceil(4)),
        block(),
        0,
        &[
            Arg::Ptr(out.device_ptr()),
            Arg::Ptr(x.device_ptr()),
            Arg::Ptr(e.device_ptr()),
            Arg::Ptr(next.device_ptr()),
            len(n),
            Arg::F32(s.out),
            Arg::F32(s.x),
            Arg::F32(s.e),
            Arg::F32(s.noise),
            Arg::Ptr(seed.ptr()),
            Arg::U64(stream.id()),
        ],
    );
    next
}

/// Blocks of the MSE's first pass: a function of `n` only, so the sum's
/// order, hence its value, is the same on every run.
fn reduce_blocks(n: usize) -> usize {
    n.div_ceil(REDUCE_THREADS as usize * REDUCE_PER_THREAD)
        .clamp(1, REDUCE_BLOCKS)
}

/// `mean((pred - target)^2)` as a `[1]` F32 device tensor, accumulated in
/// f64 (per-block partials, then one block sums them in a fixed order).
pub fn mse(pred: &Tensor, target: &Tensor) -> Tensor {
    assert_eq!(pred.shape(), target.shape(), "mse shape mismatch");
    assert_eq!(pred.dtype(), target.dtype(), "mse type mismatch");
    let gpu = opened();
    let n = pred.numel();
    let blocks = reduce_blocks(n);
    let loss = Tensor::empty_cuda(&[1], DType::F32);
    let partials = gpu.pool.alloc(blocks * std::mem::size_of::<f64>());
    gpu.launch(
        "mse_partials",
        pred.dtype(),
        (blocks as u32, 1, 1),
        (REDUCE_THREADS, 1, 1),
        0,
        &[
            Arg::Ptr(pred.device_ptr()),
            Arg::Ptr(target.device_ptr()),
            len(n),
            Arg::Ptr(partials.ptr()),
        ],
    );
    gpu.launch_named(
        "mse_finalize",
        (1, 1, 1),
        (REDUCE_THREADS, 1, 1),
        0,
        &[
            Arg::Ptr(partials.ptr()),
            len(blocks),
            len(n),
            Arg::Ptr(loss.device_ptr()),
        ],
    );
    loss
}

/// Gradient with respect to `pred`, `2 dloss / n (pred - target)`, with
/// `dloss` a one-element device tensor (an F32 one is read in place, a bf16
/// one is widened first). The result has the type of `pred`.
pub fn mse_backward(pred: &Tensor, target: &Tensor, dloss: &Tensor) -> Tensor {
    assert_eq!(pred.shape(), target.shape(), "mse shape mismatch");
    assert_eq!(pred.dtype(), target.dtype(), "mse type mismatch");
    assert_eq!(dloss.numel(), 1, "dloss has one element");
    let wide;
    let dloss = if dloss.dtype() == DType::F32 {
        dloss
    } else {
        wide = super::elementwise::cast(dloss, DType::F32);
        &wide
    };
    let n = pred.numel();
    let dpred = Tensor::empty_cuda(pred.shape(), pred.dtype());
    opened().launch(
        "mse_backward",
        pred.dtype(),
        grid(n),
        block(),
        0,
        &[
            Arg::Ptr(pred.device_ptr()),
            Arg::Ptr(target.device_ptr()),
            Arg::Ptr(dloss.device_ptr()),
            Arg::Ptr(dpred.device_ptr()),
            len(n),
        ],
    );
    dpred
}

//! The sampling loop (spec section 4): start at the source endpoint E, run
//! the planned steps, each one network evaluation and one fused posterior.
//! On the GPU the whole restoration (mean network and loop) is captured
//! once as a CUDA graph and replayed (`CapturedRestore`).

use super::Bridge;
use crate::cuda::bridge::SeedCell;
use crate::cuda::graph::Graph;
use crate::error::Result;
use crate::rng::Stream;
use crate::tensor::{DType, Tensor};
use crate::{cuda, ops};

/// Where the sampler's seed lives: a host value (CPU tensors), or a device
/// cell a replayed graph reads (device tensors).
#[derive(Clone, Copy)]
pub enum Seed<'a> {
    Host(u64),
    Device(&'a SeedCell),
}

/// Runs the sampler from `e` with `nfe` evaluations of `net(x, time_input)`
/// (the raw network output); the posterior noise of step i is stream
/// `Sampler(i)` under the seed.
pub fn sample(
    bridge: &Bridge,
    e: &Tensor,
    nfe: usize,
    seed: Seed,
    mut net: impl FnMut(&Tensor, f32) -> Tensor,
) -> Result<Tensor> {
    let plan = bridge.plan(nfe)?;
    let mut x = e.clone();
    for (i, step) in plan.iter().enumerate() {
        let out = net(&x, step.time_input);
        x = ops::posterior_step(&out, &x, e, step.coeffs, seed, Stream::Sampler(i as u64));
    }
    Ok(x)
}

/// A restoration of one input shape captured as a CUDA graph: the input
/// and output buffers and the seed cell are fixed, so a replay is one
/// upload, one graph launch and one download.
pub struct CapturedRestore {
    shape: Vec<usize>,
    nfe: usize,
    input: Tensor,
    output: Tensor,
    seed: SeedCell,
    graph: Graph,
}

impl CapturedRestore {
    /// Runs `restore(input, seed)` once to warm up (kernels loaded, pool
    /// filled), then captures it.
    pub fn capture(
        shape: &[usize],
        dtype: DType,
        nfe: usize,
        restore: impl Fn(&Tensor, Seed) -> Result<Tensor>,
    ) -> Result<CapturedRestore> {
        let input = Tensor::full_cuda(shape, 0.0, dtype);
        // Allocated before the warm-up, so that the pool holds, beside it,
        // every buffer the captured run takes (the capture may not take a
        // new one from the driver).
        let output = Tensor::empty_cuda(shape, dtype);
        let seed = SeedCell::new();
        seed.set(0);
        drop(restore(&input, Seed::Device(&seed))?);
        cuda::gpu()?.synchronize()?;
        let mut failed = None;
        let graph = Graph::capture(|| match restore(&input, Seed::Device(&seed)) {
            Ok(y) => cuda::elementwise::copy(
                y.device_ptr(),
                output.device_ptr(),
                y.numel() * dtype.size(),
            ),
            Err(e) => failed = Some(e),
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(CapturedRestore {
            shape: shape.to_vec(),
            nfe,
            input,
            output,
            seed,
            graph,
        })
    }

    pub fn fits(&self, shape: &[usize], nfe: usize) -> bool {
        self.shape == shape && self.nfe == nfe
    }

    /// Kernel launches one replay runs.
    pub fn kernels(&self) -> u64 {
        self.graph.kernels
    }

    /// Restores a host batch of the captured shape; returns a host tensor.
    pub fn run(&self, x1: &Tensor, seed: u64) -> Result<Tensor> {
        let gpu = cuda::gpu()?;
        gpu.upload(x1.data(), &self.input);
        self.seed.set(seed);
        self.graph.launch()?;
        self.output.to_host()
    }
}

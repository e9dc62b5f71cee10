//! The sampling loop (spec section 4): start at the source endpoint E, run
//! the planned steps, each one network evaluation and one fused posterior.

use super::Bridge;
use crate::cpu::bridge::posterior_step;
use crate::error::Result;
use crate::rng::Stream;
use crate::tensor::Tensor;

/// Runs the sampler from `e` with `nfe` evaluations of `net(x, time_input)`
/// (the raw network output); the posterior noise of step i is stream
/// `Sampler(i)` under `seed`.
pub fn sample(
    bridge: &Bridge,
    e: &Tensor,
    nfe: usize,
    seed: u64,
    mut net: impl FnMut(&Tensor, f32) -> Tensor,
) -> Result<Tensor> {
    let plan = bridge.plan(nfe)?;
    let mut x = e.clone();
    for (i, step) in plan.iter().enumerate() {
        let out = net(&x, step.time_input);
        x = posterior_step(&out, &x, e, step.coeffs, seed, Stream::Sampler(i as u64));
    }
    Ok(x)
}

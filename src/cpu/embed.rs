//! ADM's sinusoidal time embedding (guided-diffusion `timestep_embedding`).
//!
//! `t` is `[n]` (the network's time input, e.g. `t * 1000`), the output is
//! `[n, dim]` with `dim` even: `cos(t f_i)` in the first half and `sin(t f_i)`
//! in the second, `f_i = exp(-ln(10000) i / (dim/2))`. The backward gives the
//! derivative with respect to t (the time input is data, not a parameter, but
//! the op is differentiable like every other).

use super::zeros;
use crate::tensor::Tensor;

fn frequencies(dim: usize) -> impl Iterator<Item = f64> {
    let half = dim / 2;
    (0..half).map(move |i| (-(10000f64.ln()) * i as f64 / half as f64).exp())
}

pub fn timestep_embedding(t: &Tensor, dim: usize) -> Tensor {
    assert!(
        dim.is_multiple_of(2),
        "time embedding width {dim} must be even"
    );
    let half = dim / 2;
    let mut out = zeros(t.numel() * dim);
    for (row, &tv) in out.chunks_mut(dim).zip(t.data()) {
        for (i, f) in frequencies(dim).enumerate() {
            let arg = tv as f64 * f;
            row[i] = arg.cos() as f32;
            row[half + i] = arg.sin() as f32;
        }
    }
    Tensor::from_vec(&[t.numel(), dim], out)
}

pub fn timestep_embedding_backward(t: &Tensor, dy: &Tensor) -> Tensor {
    let dim = dy.shape()[1];
    let half = dim / 2;
    let dt = t
        .data()
        .iter()
        .zip(dy.data().chunks(dim))
        .map(|(&tv, d)| {
            frequencies(dim)
                .enumerate()
                .map(|(i, f)| {
                    let arg = tv as f64 * f;
                    f * (arg.cos() * d[half + i] as f64 - arg.sin() * d[i] as f64)
                })
                .sum::<f64>() as f32
        })
        .collect();
    Tensor::from_vec(t.shape(), dt)
}

//! The differentiable ops the U-Net is written in: each runs its forward on
//! the backend that holds the tensors (the CPU backend, `cpu::*`) and records
//! its backward on the tape. This is the one place a second backend plugs in.

use crate::autograd::{Tape, Var};
use crate::cpu;
use crate::tensor::Tensor;

/// A 3x3 or 1x1 convolution with optional bias, stride 1 or 2, zero padding.
pub fn conv2d(tape: &Tape, x: &Var, w: &Var, b: Option<&Var>, stride: usize) -> Var {
    let y = cpu::conv::conv2d(x.value(), w.value(), b.map(Var::value), stride);
    let (xs, ws) = (x.shared(), w.shared());
    let mut inputs = vec![x, w];
    inputs.extend(b);
    tape.record("conv2d", y, &inputs, move |dy, need| {
        let need_bias = need.get(2).copied().unwrap_or(false);
        let g = cpu::conv::conv2d_backward(&xs, &ws, dy, stride, [need[0], need[1], need_bias]);
        vec![g.dx, g.dw, g.db]
    })
}

pub fn linear(tape: &Tape, x: &Var, w: &Var, b: Option<&Var>) -> Var {
    let y = cpu::linear::linear(x.value(), w.value(), b.map(Var::value));
    let (xs, ws) = (x.shared(), w.shared());
    let mut inputs = vec![x, w];
    inputs.extend(b);
    tape.record("linear", y, &inputs, move |dy, need| {
        let (dx, dw) = cpu::linear::linear_backward(&xs, &ws, dy, need[0], need[1]);
        let db = need
            .get(2)
            .copied()
            .unwrap_or(false)
            .then(|| cpu::sum_rows(dy));
        vec![dx, dw, db]
    })
}

/// Group norm over `groups` channel groups, SiLU after it when `silu`.
pub fn group_norm(tape: &Tape, x: &Var, gamma: &Var, beta: &Var, groups: usize, silu: bool) -> Var {
    let (y, stats) = cpu::norm::group_norm(x.value(), gamma.value(), beta.value(), groups, silu);
    let (xs, gs, bs) = (x.shared(), gamma.shared(), beta.shared());
    tape.record("group_norm", y, &[x, gamma, beta], move |dy, _| {
        let (dx, dg, db) = cpu::norm::group_norm_backward(&xs, &gs, &bs, &stats, dy, silu);
        vec![Some(dx), Some(dg), Some(db)]
    })
}

pub fn silu(tape: &Tape, x: &Var) -> Var {
    let xs = x.shared();
    tape.record(
        "silu",
        cpu::elementwise::silu(x.value()),
        &[x],
        move |dy, _| vec![Some(cpu::elementwise::silu_backward(&xs, dy))],
    )
}

pub fn add(tape: &Tape, a: &Var, b: &Var) -> Var {
    let y = cpu::elementwise::add(a.value(), b.value());
    tape.record("add", y, &[a, b], |dy, need| {
        vec![need[0].then(|| dy.clone()), need[1].then(|| dy.clone())]
    })
}

/// `x * (1 + scale) + shift` per image and channel, `ss = [scale, shift]`
/// (`[n, 2c]`), or `x + shift` when `ss` is `[n, c]`.
pub fn scale_shift(tape: &Tape, x: &Var, ss: &Var) -> Var {
    let y = cpu::elementwise::scale_shift(x.value(), ss.value());
    let (xs, sss) = (x.shared(), ss.shared());
    tape.record("scale_shift", y, &[x, ss], move |dy, _| {
        let (dx, dss) = cpu::elementwise::scale_shift_backward(&xs, &sss, dy);
        vec![Some(dx), Some(dss)]
    })
}

/// Channel concatenation (the U-Net's skip connections).
pub fn concat(tape: &Tape, a: &Var, b: &Var) -> Var {
    let ca = a.value().nhwc().3;
    let y = cpu::elementwise::concat(a.value(), b.value());
    tape.record("concat", y, &[a, b], move |dy, _| {
        let (da, db) = cpu::elementwise::concat_backward(dy, ca);
        vec![Some(da), Some(db)]
    })
}

pub fn upsample2x(tape: &Tape, x: &Var) -> Var {
    tape.record(
        "upsample2x",
        cpu::resample::upsample2x(x.value()),
        &[x],
        |dy, _| vec![Some(cpu::resample::upsample2x_backward(dy))],
    )
}

pub fn avgpool2x(tape: &Tape, x: &Var) -> Var {
    tape.record(
        "avgpool2x",
        cpu::resample::avgpool2x(x.value()),
        &[x],
        |dy, _| vec![Some(cpu::resample::avgpool2x_backward(dy))],
    )
}

/// Self-attention over pixels; `qkv` is `[n, h, w, 3c]` in ADM's legacy
/// per-head order, the result `[n, h, w, c]`.
pub fn attention(tape: &Tape, qkv: &Var, head_dim: usize) -> Var {
    let (y, probs) = cpu::attention::attention(qkv.value(), head_dim);
    let qs = qkv.shared();
    tape.record("attention", y, &[qkv], move |dy, _| {
        vec![Some(cpu::attention::attention_backward(
            &qs, &probs, dy, head_dim,
        ))]
    })
}

/// Sinusoidal embedding `[n, dim]` of the time inputs `t` (`[n]`).
pub fn time_embedding(tape: &Tape, t: &Var, dim: usize) -> Var {
    let y = cpu::embed::timestep_embedding(t.value(), dim);
    let ts = t.shared();
    tape.record("time_embedding", y, &[t], move |dy, _| {
        vec![Some(cpu::embed::timestep_embedding_backward(&ts, dy))]
    })
}

/// `mean((pred - target)^2)`, a one-element tensor.
pub fn mse(tape: &Tape, pred: &Var, target: &Var) -> Var {
    let y = cpu::loss::mse(pred.value(), target.value());
    let (ps, ts) = (pred.shared(), target.shared());
    tape.record("mse", y, &[pred, target], move |dy, need| {
        let dp = cpu::loss::mse_backward(&ps, &ts, dy.data()[0]);
        let dt = need[1].then(|| {
            let neg: Vec<f32> = dp.data().iter().map(|v| -v).collect();
            Tensor::from_vec(dp.shape(), neg)
        });
        vec![need[0].then_some(dp), dt]
    })
}

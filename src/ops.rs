//! The differentiable ops the U-Net is written in: each runs its forward on
//! the backend that holds the tensors (`cpu::*` for host tensors, `cuda::*`
//! for device tensors: the twins have the same signatures) and records its
//! backward on the tape. Then the bridges' fused ops, which need no
//! gradient. This is the one place the backend is chosen.

use crate::autograd::{Tape, Var};
use crate::bridge::sample::Seed;
use crate::cpu::bridge::{Combo, StepCoeffs};
use crate::profile::{conv_flops, span};
use crate::rng::Stream;
use crate::tensor::{DType, Tensor};
use crate::{cpu, cuda};
use std::rc::Rc;

/// `backend!(t, family::function(args))` calls `cuda::family::function` if
/// `t` lives on the device, else `cpu::family::function`.
macro_rules! backend {
    ($t:expr, $family:ident :: $f:ident ( $($arg:expr),* $(,)? )) => {
        if $t.is_cuda() {
            cuda::$family::$f($($arg),*)
        } else {
            cpu::$family::$f($($arg),*)
        }
    };
}

impl Tensor {
    /// `self += alpha * other`, element by element, on either backend.
    pub fn axpy(&mut self, alpha: f32, other: &Tensor) {
        assert_eq!(self.shape(), other.shape(), "axpy shape mismatch");
        backend!(self, elementwise::axpy(self, alpha, other))
    }

    /// `self += other` (gradient accumulation).
    pub fn add_assign(&mut self, other: &Tensor) {
        self.axpy(1.0, other);
    }

    /// `self -= other`.
    pub fn sub_assign(&mut self, other: &Tensor) {
        self.axpy(-1.0, other);
    }
}

/// A 3x3 or 1x1 convolution with optional bias, stride 1 or 2, zero padding.
pub fn conv2d(tape: &Tape, x: &Var, w: &Var, b: Option<&Var>, stride: usize) -> Var {
    let (n, h, wd, cin) = x.value().nhwc();
    let (cout, k) = (w.value().shape()[0], w.value().shape()[1]);
    let flops = conv_flops(&[n, h.div_ceil(stride), wd.div_ceil(stride), cout], cin, k);
    let y = span("conv2d", &[x.value(), w.value()], flops, || {
        backend!(
            x.value(),
            conv::conv2d(x.value(), w.value(), b.map(Var::value), stride)
        )
    });
    let (xs, ws) = (x.shared(), w.shared());
    let mut inputs = vec![x, w];
    inputs.extend(b);
    tape.record("conv2d", y, &inputs, move |dy, need| {
        let need = [need[0], need[1], need.get(2).copied().unwrap_or(false)];
        let products = f64::from(u8::from(need[0]) + u8::from(need[1]));
        span("conv2d.backward", &[dy, &xs, &ws], products * flops, || {
            let g = backend!(dy, conv::conv2d_backward(&xs, &ws, dy, stride, need));
            vec![g.dx, g.dw, g.db]
        })
    })
}

/// The bias gradient: `dy` summed over every dimension but the last.
fn sum_rows(dy: &Tensor) -> Tensor {
    if dy.is_cuda() {
        cuda::elementwise::sum_rows(dy)
    } else {
        cpu::sum_rows(dy)
    }
}

pub fn linear(tape: &Tape, x: &Var, w: &Var, b: Option<&Var>) -> Var {
    let (xv, wv, bv) = (x.value(), w.value(), b.map(Var::value));
    let flops = 2.0 * xv.numel() as f64 * wv.shape()[0] as f64;
    let y = span("linear", &[xv, wv], flops, || {
        if xv.is_cuda() {
            cuda::conv::linear(xv, wv, bv) // a 1x1 convolution on the GPU
        } else {
            cpu::linear::linear(xv, wv, bv)
        }
    });
    let (xs, ws) = (x.shared(), w.shared());
    let mut inputs = vec![x, w];
    inputs.extend(b);
    tape.record("linear", y, &inputs, move |dy, need| {
        let products = f64::from(u8::from(need[0]) + u8::from(need[1]));
        span("linear.backward", &[dy, &xs, &ws], products * flops, || {
            let (dx, dw) = if dy.is_cuda() {
                cuda::conv::linear_backward(&xs, &ws, dy, need[0], need[1])
            } else {
                cpu::linear::linear_backward(&xs, &ws, dy, need[0], need[1])
            };
            let db = need.get(2).copied().unwrap_or(false).then(|| sum_rows(dy));
            vec![dx, dw, db]
        })
    })
}

/// Group norm over `groups` channel groups, SiLU after it when `silu`.
pub fn group_norm(tape: &Tape, x: &Var, gamma: &Var, beta: &Var, groups: usize, silu: bool) -> Var {
    let (xs, gs, bs) = (x.shared(), gamma.shared(), beta.shared());
    let name = if silu {
        "group_norm_silu"
    } else {
        "group_norm"
    };
    let backward_name = if silu {
        "group_norm_silu.backward"
    } else {
        "group_norm.backward"
    };
    if x.value().is_cuda() {
        let (y, stats) = span(name, &[&xs], 0.0, || {
            cuda::norm::group_norm(&xs, &gs, &bs, groups, silu)
        });
        return tape.record("group_norm", y, &[x, gamma, beta], move |dy, _| {
            let (dx, dg, db) = span(backward_name, &[dy, &xs], 0.0, || {
                cuda::norm::group_norm_backward(&xs, &gs, &bs, &stats, dy, silu)
            });
            vec![Some(dx), Some(dg), Some(db)]
        });
    }
    let (y, stats) = span(name, &[&xs], 0.0, || {
        cpu::norm::group_norm(&xs, &gs, &bs, groups, silu)
    });
    tape.record("group_norm", y, &[x, gamma, beta], move |dy, _| {
        let (dx, dg, db) = span(backward_name, &[dy, &xs], 0.0, || {
            cpu::norm::group_norm_backward(&xs, &gs, &bs, &stats, dy, silu)
        });
        vec![Some(dx), Some(dg), Some(db)]
    })
}

pub fn silu(tape: &Tape, x: &Var) -> Var {
    let xs = x.shared();
    let y = span("silu", &[&xs], 0.0, || backend!(xs, elementwise::silu(&xs)));
    tape.record("silu", y, &[x], move |dy, _| {
        vec![Some(span("silu.backward", &[dy, &xs], 0.0, || {
            backend!(dy, elementwise::silu_backward(&xs, dy))
        }))]
    })
}

pub fn add(tape: &Tape, a: &Var, b: &Var) -> Var {
    let y = span("add", &[a.value(), b.value()], 0.0, || {
        backend!(a.value(), elementwise::add(a.value(), b.value()))
    });
    tape.record("add", y, &[a, b], |dy, need| {
        vec![need[0].then(|| dy.clone()), need[1].then(|| dy.clone())]
    })
}

/// `x * (1 + scale) + shift` per image and channel, `ss = [scale, shift]`
/// (`[n, 2c]`), or `x + shift` when `ss` is `[n, c]`.
pub fn scale_shift(tape: &Tape, x: &Var, ss: &Var) -> Var {
    let (xs, sss) = (x.shared(), ss.shared());
    let y = span("scale_shift", &[&xs, &sss], 0.0, || {
        backend!(xs, elementwise::scale_shift(&xs, &sss))
    });
    tape.record("scale_shift", y, &[x, ss], move |dy, _| {
        let (dx, dss) = span("scale_shift.backward", &[dy, &xs, &sss], 0.0, || {
            backend!(dy, elementwise::scale_shift_backward(&xs, &sss, dy))
        });
        vec![Some(dx), Some(dss)]
    })
}

/// Channel concatenation (the U-Net's skip connections).
pub fn concat(tape: &Tape, a: &Var, b: &Var) -> Var {
    let ca = a.value().nhwc().3;
    let y = span("concat", &[a.value(), b.value()], 0.0, || {
        backend!(a.value(), elementwise::concat(a.value(), b.value()))
    });
    tape.record("concat", y, &[a, b], move |dy, _| {
        let (da, db) = span("concat.backward", &[dy], 0.0, || {
            backend!(dy, elementwise::concat_backward(dy, ca))
        });
        vec![Some(da), Some(db)]
    })
}

pub fn upsample2x(tape: &Tape, x: &Var) -> Var {
    let y = span("upsample2x", &[x.value()], 0.0, || {
        backend!(x.value(), resample::upsample2x(x.value()))
    });
    tape.record("upsample2x", y, &[x], |dy, _| {
        vec![Some(span("upsample2x.backward", &[dy], 0.0, || {
            backend!(dy, resample::upsample2x_backward(dy))
        }))]
    })
}

pub fn avgpool2x(tape: &Tape, x: &Var) -> Var {
    let y = span("avgpool2x", &[x.value()], 0.0, || {
        backend!(x.value(), resample::avgpool2x(x.value()))
    });
    tape.record("avgpool2x", y, &[x], |dy, _| {
        vec![Some(span("avgpool2x.backward", &[dy], 0.0, || {
            backend!(dy, resample::avgpool2x_backward(dy))
        }))]
    })
}

/// Self-attention over pixels; `qkv` is `[n, h, w, 3c]` in ADM's legacy
/// per-head order, the result `[n, h, w, c]`. The CPU keeps the softmax
/// probabilities for the backward (only when it will run); the GPU (flash attention) keeps the
/// output and the rows' log-sum-exp and recomputes them.
pub fn attention(tape: &Tape, qkv: &Var, head_dim: usize) -> Var {
    let qs = qkv.shared();
    // QK^T and PV: 4 T^2 C per image (C = heads x head_dim); the backward
    // recomputes or reuses P and does twice that.
    let (n, h, w, c3) = qs.nhwc();
    let flops = 4.0 * n as f64 * ((h * w) as f64).powi(2) * (c3 / 3) as f64;
    if qs.is_cuda() {
        let (y, lse) = span("attention", &[&qs], flops, || {
            cuda::attention::attention(&qs, head_dim)
        });
        let out = Rc::new(y);
        return tape.record("attention", out.clone(), &[qkv], move |dy, _| {
            vec![Some(span(
                "attention.backward",
                &[dy, &qs],
                2.0 * flops,
                || cuda::attention::attention_backward(&qs, &out, &lse, dy, head_dim),
            ))]
        });
    }
    let keep_probs = tape.wants_grad(&[qkv]);
    let (y, probs) = span("attention", &[&qs], flops, || {
        cpu::attention::attention(&qs, head_dim, keep_probs)
    });
    tape.record("attention", y, &[qkv], move |dy, _| {
        let probs = probs.expect("the forward keeps the probabilities when recorded");
        vec![Some(span(
            "attention.backward",
            &[dy, &qs],
            2.0 * flops,
            || cpu::attention::attention_backward(&qs, &probs, dy, head_dim),
        ))]
    })
}

/// Sinusoidal embedding `[n, dim]` of the time inputs `t` (`[n]`, f32),
/// stored as `dtype` (the network's; the host is always f32).
pub fn time_embedding(tape: &Tape, t: &Var, dim: usize, dtype: DType) -> Var {
    let ts = t.shared();
    if ts.is_cuda() {
        let y = cuda::elementwise::timestep_embedding(&ts, dim, dtype);
        return tape.record("time_embedding", y, &[t], move |dy, _| {
            vec![Some(cuda::elementwise::timestep_embedding_backward(
                &ts, dy,
            ))]
        });
    }
    let y = cpu::embed::timestep_embedding(&ts, dim);
    tape.record("time_embedding", y, &[t], move |dy, _| {
        vec![Some(cpu::embed::timestep_embedding_backward(&ts, dy))]
    })
}

/// `mean((pred - target)^2)`, a one-element tensor (f32 on either backend).
pub fn mse(tape: &Tape, pred: &Var, target: &Var) -> Var {
    let (ps, ts) = (pred.shared(), target.shared());
    let y = if ps.is_cuda() {
        cuda::bridge::mse(&ps, &ts)
    } else {
        cpu::loss::mse(&ps, &ts)
    };
    tape.record("mse", y, &[pred, target], move |dy, need| {
        let dp = if dy.is_cuda() {
            cuda::bridge::mse_backward(&ps, &ts, dy)
        } else {
            cpu::loss::mse_backward(&ps, &ts, dy.data()[0])
        };
        let dt = need[1].then(|| {
            let mut neg = dp.clone();
            neg.axpy(-2.0, &dp); // dp - 2 dp = -dp exactly, on either backend
            neg
        });
        vec![need[0].then_some(dp), dt]
    })
}

/// The bridge's training input and target for a batch, noise drawn from
/// (seed, stream): see `cpu::bridge::training_pair`.
pub fn training_pair(
    x0: &Tensor,
    e: &Tensor,
    per_image: &[(Combo, Combo)],
    seed: u64,
    stream: Stream,
) -> (Tensor, Tensor) {
    span("training_pair", &[x0, e], 0.0, || {
        backend!(x0, bridge::training_pair(x0, e, per_image, seed, stream))
    })
}

/// One sampler step (see `cpu::bridge::posterior_step`); on the GPU the
/// seed is read from device memory, so a captured graph can be replayed
/// with another.
pub fn posterior_step(
    out: &Tensor,
    x: &Tensor,
    e: &Tensor,
    coeffs: StepCoeffs,
    seed: Seed,
    stream: Stream,
) -> Tensor {
    span("posterior_step", &[out, x, e], 0.0, || match seed {
        Seed::Host(s) => cpu::bridge::posterior_step(out, x, e, coeffs, s, stream),
        Seed::Device(cell) => cuda::bridge::posterior_step(out, x, e, coeffs, cell, stream),
    })
}

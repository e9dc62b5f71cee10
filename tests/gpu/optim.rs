//! kernels/optim.cu (`cuda::optim::FlatOptimizer`) against `optim`:
//! three steps of clip_grad_norm + AdamW + Ema on parameters of odd sizes,
//! with the clipping active and inactive, in f32 and bf16 working
//! parameters; a non-finite gradient leaving the state untouched; and, in
//! bf16 mode, the parameter gradients the backward kernels hand the
//! optimizer (conv and linear weights, biases, group-norm gamma and beta)
//! accumulated and stored in f32, not rounded to bf16.
//!
//! The gradients are f32 in both modes (as the backward kernels store
//! them), so master weights, m, v and the EMA agree to 1e-5 in both; the
//! bf16 working parameters are compared loosely.

use crate::bridge::assert_rel;
use crate::common::{assert_close, dev, random, MODES};
use nadb::cuda::optim::{FlatOptimizer, Hyper};
use nadb::optim::{clip_grad_norm, AdamW, Ema};
use nadb::tensor::{DType, Tensor};

pub const TESTS: &[crate::Test] = &[
    ("optim_adamw_clipped", adamw_clipped),
    ("optim_adamw_unclipped", adamw_unclipped),
    ("optim_nonfinite_gradient_skips", nonfinite_skips),
    (
        "optim_bf16_mode_parameter_gradients_are_f32",
        bf16_mode_gradients_are_f32,
    ),
];

const SHAPES: [&[usize]; 5] = [&[3, 3, 3, 5], &[17], &[64, 33], &[1], &[4097]];
const STATE_TOL: f32 = 1e-5;
const WEIGHT_DECAY: f32 = 0.01;
const EMA_DECAY: f32 = 0.9;

fn params(seed: u64) -> Vec<Tensor> {
    SHAPES
        .iter()
        .enumerate()
        .map(|(i, s)| random(s, seed + i as u64, 0.5))
        .collect()
}

fn zeros() -> Vec<Tensor> {
    SHAPES.iter().map(|s| Tensor::zeros(s)).collect()
}

/// The gradients of step `step` (f32), as host values and on the device.
fn grads(step: usize) -> (Vec<Tensor>, Vec<Tensor>) {
    SHAPES
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let g = random(s, 1000 + 10 * step as u64 + i as u64, 1.0);
            let d = dev(&g, DType::F32);
            (g, d)
        })
        .unzip()
}

fn compare(what: &str, cpu: &[Tensor], gpu: &[Tensor], tol: f32) {
    assert_eq!(cpu.len(), gpu.len(), "{what}: tensor count");
    for (i, (c, g)) in cpu.iter().zip(gpu).enumerate() {
        assert_rel(&format!("{what} {i} {:?}", c.shape()), c, g, tol);
    }
}

/// Three steps against the CPU; `clip` relative to the gradients' norm
/// (about 46 here) decides whether the clipping is active.
fn three_steps(clip: f32, clipped: bool) {
    for (dtype, loose) in MODES {
        let master = params(1);
        let mut cpu_params = master.clone();
        let mut adam = AdamW::new(&cpu_params, 1e-2, WEIGHT_DECAY);
        let mut ema = Ema::new(&cpu_params, EMA_DECAY);
        let (mut opt, working) =
            FlatOptimizer::new(&master, &zeros(), &zeros(), &master, dtype, 0).expect("optimizer");
        assert_eq!(working.len(), SHAPES.len(), "working parameters");
        for (w, p) in working.iter().zip(&master) {
            assert_eq!(w.dtype(), dtype, "working type");
            assert_close("initial working parameter", p, w, loose);
        }
        for step in 0..3 {
            let tag = format!("{dtype:?} step {step}");
            let (mut g, gd) = grads(step);
            // A warm-up-like rate that changes every step.
            let lr = 1e-2 * (step + 1) as f32 / 3.0;
            adam.lr = lr;
            let norm = clip_grad_norm(&mut g, clip);
            assert_eq!(
                norm > clip,
                clipped,
                "{tag}: clipping active = {clipped} (norm {norm})"
            );
            adam.step(cpu_params.iter_mut(), &g);
            let decay = ema.decay_at(step as u64 + 1);
            ema.update(&cpu_params, decay);
            let hyper = Hyper::new(lr, WEIGHT_DECAY, clip, decay);
            assert!(opt.step(&gd, &hyper).expect("step"), "{tag}: finite norm");
            let gnorm = opt.grad_norm().to_host().expect("norm").data()[0];
            assert!(
                (gnorm - norm).abs() <= 1e-6 * norm,
                "{tag}: norm {gnorm} on the GPU, {norm} on the CPU"
            );
            let (m, mo, v, e) = opt.to_host().expect("state");
            compare(&format!("{tag} master"), &cpu_params, &m, STATE_TOL);
            compare(&format!("{tag} m"), &adam.m, &mo, STATE_TOL);
            compare(&format!("{tag} v"), &adam.v, &v, STATE_TOL);
            compare(&format!("{tag} ema"), &ema.weights, &e, STATE_TOL);
            for (i, (p, w)) in cpu_params.iter().zip(&working).enumerate() {
                let tol = if dtype == DType::F32 {
                    STATE_TOL
                } else {
                    loose
                };
                assert_close(&format!("{tag} working {i}"), p, w, tol);
            }
        }
        assert_eq!(opt.steps(), 3, "step count");
    }
}

fn adamw_clipped() {
    three_steps(1.0, true);
}

fn adamw_unclipped() {
    three_steps(1e3, false);
}

/// A NaN gradient, then finite gradients with an infinite loss: the norm
/// reads NaN and nothing else changes, each time.
fn nonfinite_skips() {
    let master = params(2);
    let (mut opt, working) =
        FlatOptimizer::new(&master, &zeros(), &zeros(), &master, DType::F32, 5).expect("optimizer");
    let (_, good) = grads(0);
    let mut gd = good.clone();
    let mut bad = random(SHAPES[2], 7, 1.0);
    bad.data_mut()[100] = f32::NAN;
    gd[2] = dev(&bad, DType::F32);
    let hyper = Hyper::new(1e-2, WEIGHT_DECAY, 1.0, EMA_DECAY);
    assert!(
        !opt.step(&gd, &hyper).expect("step"),
        "step reported as taken"
    );
    let infinite = dev(&Tensor::from_vec(&[1], vec![f32::INFINITY]), DType::F32);
    opt.queue_step(&good, &hyper, Some(&infinite));
    let (taken, loss) = opt.finish_step().expect("step");
    assert!(!taken, "a step with an infinite loss reported as taken");
    assert_eq!(loss, f32::INFINITY, "the loss read back");
    assert_eq!(opt.steps(), 5, "a skipped step does not count");
    let norm = opt.grad_norm().to_host().expect("norm").data()[0];
    assert!(norm.is_nan(), "norm of a skipped step is {norm}");
    let (m, mo, v, e) = opt.to_host().expect("state");
    compare("master", &master, &m, 0.0);
    compare("m", &zeros(), &mo, 0.0);
    compare("v", &zeros(), &v, 0.0);
    compare("ema", &master, &e, 0.0);
    for (p, w) in master.iter().zip(&working) {
        assert_close("working", p, w, 0.0);
    }
}

/// An f32 gradient of `what` that no bf16 rounding went through: its dtype
/// is F32, it matches the CPU (given the same bf16 inputs) to `tol`, and
/// some of its values have low mantissa bits that bf16 would drop.
fn assert_f32_gradient(what: &str, reference: &Tensor, got: &Tensor, tol: f32) {
    assert_eq!(
        got.dtype(),
        DType::F32,
        "{what}: stored as {:?}",
        got.dtype()
    );
    assert_close(what, reference, got, tol);
    let host = got.to_host().expect("download");
    let unrounded = host
        .data()
        .iter()
        .filter(|v| v.to_bits() & 0xffff != 0)
        .count();
    assert!(
        unrounded * 2 > host.numel(),
        "{what}: only {unrounded} of {} values keep more than bf16's bits",
        host.numel()
    );
}

fn bf16_mode_gradients_are_f32() {
    use nadb::cpu;
    let bf16 = |t: &Tensor| dev(t, DType::Bf16);
    let stored = |t: &Tensor| bf16(t).to_host().expect("download");
    // conv 3x3 (weight and bias).
    let x = stored(&random(&[2, 9, 7, 24], 900, 1.0));
    let w = stored(&random(&[40, 3, 3, 24], 901, 0.5));
    let dy = stored(&random(&[2, 9, 7, 40], 902, 1.0));
    let want = cpu::conv::conv2d_backward(&x, &w, &dy, 1, [false, true, true]);
    let got =
        nadb::cuda::conv::conv2d_backward(&bf16(&x), &bf16(&w), &bf16(&dy), 1, [false, true, true]);
    let tol = 1e-5;
    assert_f32_gradient(
        "conv dw",
        &want.dw.expect("cpu"),
        &got.dw.expect("gpu"),
        tol,
    );
    assert_f32_gradient(
        "conv db",
        &want.db.expect("cpu"),
        &got.db.expect("gpu"),
        tol,
    );
    // linear (weight; its bias gradient is sum_rows, as the conv's).
    let (xl, wl, dyl) = (
        stored(&random(&[37, 48], 903, 1.0)),
        stored(&random(&[24, 48], 904, 0.5)),
        stored(&random(&[37, 24], 905, 1.0)),
    );
    let (_, want_dw) = cpu::linear::linear_backward(&xl, &wl, &dyl, false, true);
    let (_, got_dw) =
        nadb::cuda::conv::linear_backward(&bf16(&xl), &bf16(&wl), &bf16(&dyl), false, true);
    assert_f32_gradient(
        "linear dw",
        &want_dw.expect("cpu"),
        &got_dw.expect("gpu"),
        tol,
    );
    // group norm + SiLU (gamma and beta, bf16 like the U-Net keeps them).
    let xn = stored(&random(&[2, 6, 5, 64], 906, 2.0));
    let gamma = stored(&random(&[64], 907, 1.0));
    let beta = stored(&random(&[64], 908, 0.5));
    let dyn_ = stored(&random(&[2, 6, 5, 64], 909, 1.0));
    let (_, stats_ref) = cpu::norm::group_norm(&xn, &gamma, &beta, 32, true);
    let (_, want_dg, want_db) =
        cpu::norm::group_norm_backward(&xn, &gamma, &beta, &stats_ref, &dyn_, true);
    let (_, stats) =
        nadb::cuda::norm::group_norm(&bf16(&xn), &bf16(&gamma), &bf16(&beta), 32, true);
    let (_, dg, db) = nadb::cuda::norm::group_norm_backward(
        &bf16(&xn),
        &bf16(&gamma),
        &bf16(&beta),
        &stats,
        &bf16(&dyn_),
        true,
    );
    assert_f32_gradient("group norm dgamma", &want_dg, &dg, 1e-4);
    assert_f32_gradient("group norm dbeta", &want_db, &db, 1e-4);
}

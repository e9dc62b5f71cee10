//! kernels/optim.cu (`cuda::optim::FlatOptimizer`) against `optim`:
//! three steps of clip_grad_norm + AdamW + Ema on parameters of odd sizes,
//! with the clipping active and inactive, in f32 and bf16 working
//! parameters; and a non-finite gradient leaving the state untouched.
//!
//! The CPU reference gets the gradients as the device stores them (bf16-
//! rounded in bf16 mode), so master weights, m, v and the EMA agree to
//! 1e-5 in both modes; the bf16 working parameters are compared loosely.

use crate::bridge::assert_rel;
use crate::common::{assert_close, dev, random, MODES};
use nadb::cuda::optim::{FlatOptimizer, Hyper};
use nadb::optim::{clip_grad_norm, AdamW, Ema};
use nadb::tensor::{DType, Tensor};

pub const TESTS: &[crate::Test] = &[
    ("optim_adamw_clipped", adamw_clipped),
    ("optim_adamw_unclipped", adamw_unclipped),
    ("optim_nonfinite_gradient_skips", nonfinite_skips),
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

/// The gradients of step `step`, as host values and on the device.
fn grads(step: usize, dtype: DType) -> (Vec<Tensor>, Vec<Tensor>) {
    SHAPES
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let g = random(s, 1000 + 10 * step as u64 + i as u64, 1.0);
            let d = dev(&g, dtype);
            (d.to_host().expect("download"), d)
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
            let (mut g, gd) = grads(step, dtype);
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
            ema.update(&cpu_params);
            let hyper = Hyper::new(lr, WEIGHT_DECAY, clip, EMA_DECAY);
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

/// A NaN gradient: the norm reads NaN and nothing else changes.
fn nonfinite_skips() {
    let master = params(2);
    let (mut opt, working) =
        FlatOptimizer::new(&master, &zeros(), &zeros(), &master, DType::F32, 5).expect("optimizer");
    let (_, mut gd) = grads(0, DType::F32);
    let mut bad = random(SHAPES[2], 7, 1.0);
    bad.data_mut()[100] = f32::NAN;
    gd[2] = dev(&bad, DType::F32);
    let hyper = Hyper::new(1e-2, WEIGHT_DECAY, 1.0, EMA_DECAY);
    assert!(
        !opt.step(&gd, &hyper).expect("step"),
        "step reported as taken"
    );
    assert_eq!(opt.steps(), 5, "a skipped step does not count");
    let norm = opt.grad_norm().to_host().expect("norm").data()[0];
    assert!(norm.is_nan(), "norm of a NaN gradient is {norm}");
    let (m, mo, v, e) = opt.to_host().expect("state");
    compare("master", &master, &m, 0.0);
    compare("m", &zeros(), &mo, 0.0);
    compare("v", &zeros(), &v, 0.0);
    compare("ema", &master, &e, 0.0);
    for (p, w) in master.iter().zip(&working) {
        assert_close("working", p, w, 0.0);
    }
}

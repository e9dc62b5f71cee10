//! Helpers shared by the integration tests: seeded random tensors and the
//! finite-difference gradient check.
#![allow(dead_code)] // each test binary uses its own subset

use nadb::autograd::{Tape, Var};
use nadb::Tensor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

pub fn randn(rng: &mut StdRng, shape: &[usize], scale: f32) -> Tensor {
    let n = shape.iter().product();
    let data = (0..n)
        .map(|_| scale * rng.gen_range(-1.0f32..1.0))
        .collect();
    Tensor::from_vec(shape, data)
}

/// `t` with every value rounded to bf16 (the numbers a bf16 product sees).
pub fn bf16_rounded(t: &Tensor) -> Tensor {
    let bits = |v: f32| u32::from(nadb::cpu::gemm::bf16_bits(v)) << 16;
    let data = t.data().iter().map(|&v| f32::from_bits(bits(v)));
    Tensor::from_vec(t.shape(), data.collect())
}

/// The scalar the check differentiates: `sum(out * probe)` in f64.
fn probe_loss(out: &Tensor, probe: &Tensor) -> f64 {
    out.data()
        .iter()
        .zip(probe.data())
        .map(|(&a, &b)| a as f64 * b as f64)
        .sum()
}

/// Checks the tape's gradient of `sum(f(inputs) * probe)` with respect to
/// every input against central differences at up to `samples` coordinates
/// per input. The allowed error is 2% of the largest gradient entry of that
/// input plus `abs_tol`, the finite differences' own noise floor (f32
/// forward passes; larger for deep networks).
pub fn check_grads(
    name: &str,
    inputs: Vec<Tensor>,
    samples: usize,
    abs_tol: f32,
    f: impl Fn(&Tape, &[Var]) -> Var,
) {
    let mut rng = rng(99);
    let tape = Tape::new();
    let leaves: Vec<Var> = inputs.iter().map(|t| tape.leaf(t.clone().into())).collect();
    let out = f(&tape, &leaves);
    let probe = randn(&mut rng, out.shape(), 1.0);
    // sum(out * probe) as a one-element Var: a linear layer whose weight is
    // the probe, over `out` flattened to one row.
    let flat = flatten(&tape, &out);
    let probe_row = Var::constant(probe.clone().reshape(&[1, probe.numel()]));
    let scalar = nadb::ops::linear(&tape, &flat, &probe_row, None);
    let grads = tape.backward(&scalar);
    for (i, input) in inputs.iter().enumerate() {
        let analytic = grads
            .get(&leaves[i])
            .unwrap_or_else(|| panic!("{name}: input {i} got no gradient"))
            .clone();
        let scale = analytic.data().iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let n = input.numel();
        let picks: Vec<usize> = if n <= samples {
            (0..n).collect()
        } else {
            (0..samples).map(|_| rng.gen_range(0..n)).collect()
        };
        for j in picks {
            let eps = 1e-2 * input.data()[j].abs().max(1.0);
            let eval = |delta: f32| {
                let mut moved = inputs.clone();
                moved[i].data_mut()[j] += delta;
                let tape = Tape::no_grad();
                let vars: Vec<Var> = moved.into_iter().map(Var::constant).collect();
                probe_loss(f(&tape, &vars).value(), &probe)
            };
            let numeric = ((eval(eps) - eval(-eps)) / (2.0 * eps as f64)) as f32;
            let a = analytic.data()[j];
            let err = (numeric - a).abs();
            assert!(
                err <= 2e-2 * scale + abs_tol,
                "{name}: input {i} element {j}: tape {a}, finite difference {numeric} (largest gradient of this input {scale}, allowed error {})",
                2e-2 * scale + abs_tol
            );
        }
    }
}

/// `out` reshaped to `[1, numel]`, with the gradient reshaped back.
fn flatten(tape: &Tape, v: &Var) -> Var {
    let shape = v.shape().to_vec();
    let numel = v.value().numel();
    tape.record(
        "flatten",
        v.value().clone().reshape(&[1, numel]),
        &[v],
        move |dy, _| vec![Some(dy.clone().reshape(&shape))],
    )
}

//! kernels/bridge.cu against `cpu::bridge` and `cpu::loss`: training pairs
//! (NADB- and I2SB-like coefficients, odd shapes, image boundaries inside a
//! Philox block), the in-kernel noise against `rng::normal`, posterior steps
//! with and without noise and with the seed changed on one `SeedCell`
//! between launches, and the MSE loss and its gradient.
//!
//! In F32 the kernels round like the CPU expression by expression, so the
//! outputs match to 1e-6 (the only expected difference is the noise's, at
//! most one f32 ulp in rare values: see src/rng.rs). In bf16 the CPU gets the bf16-rounded inputs and
//! the outputs are compared loosely (they are stored in bf16).

use crate::common::{assert_close, dev, random, MODES};
use nadb::bridge::{I2sbSchedule, NadbSchedule};
use nadb::cpu::bridge::{self as cpu, Combo, StepCoeffs};
use nadb::cpu::loss;
use nadb::cuda::bridge as gpu;
use nadb::rng::{self, Stream};
use nadb::tensor::{DType, Tensor};

pub const TESTS: &[crate::Test] = &[
    ("bridge_noise_matches_rng", noise_matches_rng),
    ("bridge_training_pair_nadb", training_pair_nadb),
    ("bridge_training_pair_i2sb", training_pair_i2sb),
    ("bridge_posterior_step", posterior_step),
    ("bridge_posterior_seed_cell", posterior_seed_cell),
    ("bridge_mse", mse),
    ("bridge_mse_backward", mse_backward),
];

const SHAPES: [&[usize]; 3] = [&[2, 7, 5, 3], &[3, 32, 32, 3], &[5, 1, 1, 3]];
/// F32 tolerance: the kernels round like the CPU.
const EXACT: f32 = 1e-6;

/// Asserts `max |got - reference| <= tol * max |reference|` (a relative
/// check that, unlike `assert_close`, also bites on small values).
pub fn assert_rel(what: &str, reference: &Tensor, got: &Tensor, tol: f32) {
    let got = got.to_host().expect("download");
    assert_eq!(reference.shape(), got.shape(), "{what}: shape");
    let scale = reference
        .data()
        .iter()
        .fold(f32::MIN_POSITIVE, |m, v| m.max(v.abs()));
    let err = reference.max_abs_diff(&got);
    assert!(
        err <= tol * scale,
        "{what}: max |gpu - cpu| = {err:.3e} > {tol:.0e} x {scale:.3e}"
    );
}

/// The values the device sees when `t` is stored as `dtype`.
fn as_stored(t: &Tensor, dtype: DType) -> Tensor {
    dev(t, dtype).to_host().expect("download")
}

fn tolerance(dtype: DType, loose: f32) -> f32 {
    if dtype == DType::F32 {
        EXACT
    } else {
        loose
    }
}

/// xt = z exactly when its coefficients are (0, 0, 1): each normal within
/// src/rng.rs's bound of the CPU's (one f32 ulp, or 1e-14 near 0; the
/// angle is `sincospi` on the device, `cos(TAU u)` on the CPU), the count
/// of values not equal bit for bit printed.
fn noise_matches_rng() {
    let seed = 0x1234_5678_9abc_def0;
    let stream = Stream::TrainNoise(41);
    let mut differ = 0;
    let mut total = 0;
    for shape in SHAPES.iter().copied().chain([&[4, 128, 128, 3][..]]) {
        let n = shape[0];
        let zeros = Tensor::zeros(shape);
        let only_z = Combo {
            x0: 0.0,
            e: 0.0,
            z: 1.0,
        };
        let per_image = vec![(only_z, only_z); n];
        let x0 = dev(&zeros, DType::F32);
        let (xt, _) = gpu::training_pair(&x0, &x0, &per_image, seed, stream);
        let got = xt.to_host().expect("download");
        for (i, &g) in got.data().iter().enumerate() {
            let want = rng::normal(seed, stream, i as u64);
            let ulp = f32::from_bits(want.abs().to_bits() + 1) - want.abs();
            assert!(
                (g - want).abs() <= ulp.max(1e-14),
                "noise {shape:?} [{i}]: {g:e} on the device, {want:e} on the CPU"
            );
            differ += usize::from(g.to_bits() != want.to_bits());
        }
        total += got.numel();
    }
    println!("     {differ} of {total} normals not bit for bit the CPU's (all within the bound)");
}

fn check_training_pair(what: &str, coeffs: &dyn Fn(usize) -> (Combo, Combo)) {
    let seed = 20240611;
    for shape in SHAPES {
        let per_image: Vec<(Combo, Combo)> = (0..shape[0]).map(coeffs).collect();
        let x0 = random(shape, 1, 1.0);
        let e = random(shape, 2, 1.0);
        let stream = Stream::TrainNoise(7);
        for (dtype, loose) in MODES {
            let (x0h, eh) = (as_stored(&x0, dtype), as_stored(&e, dtype));
            let (xt, target) = cpu::training_pair(&x0h, &eh, &per_image, seed, stream);
            let (gxt, gtarget) =
                gpu::training_pair(&dev(&x0, dtype), &dev(&e, dtype), &per_image, seed, stream);
            assert_eq!(gxt.dtype(), dtype, "{what}: xt type");
            let tol = tolerance(dtype, loose);
            let tag = format!("{what} {shape:?} {dtype:?}");
            assert_close(&format!("{tag} xt"), &xt, &gxt, tol);
            assert_close(&format!("{tag} target"), &target, &gtarget, tol);
        }
    }
}

fn training_pair_nadb() {
    let s = NadbSchedule::default();
    check_training_pair("nadb", &|b| {
        let c = s.training_coeffs(1 + (337 * b + 90) % 1000);
        (c.xt, c.target)
    });
}

fn training_pair_i2sb() {
    let s = I2sbSchedule::new(0.3);
    check_training_pair("i2sb", &|b| {
        let c = s.training_coeffs((411 * b + 5) % 1000);
        (c.xt, c.target)
    });
}

/// Steps of both methods: noisy ones, and last ones without noise.
fn step_cases() -> Vec<(&'static str, StepCoeffs)> {
    let nadb = NadbSchedule::default();
    let i2sb = I2sbSchedule::new(1.0);
    let cases = vec![
        (
            "nadb endpoint-aware",
            nadb.step(0.2, 0.1).expect("nadb step"),
        ),
        ("nadb standard", nadb.step(0.9, 0.8).expect("nadb step")),
        ("nadb last", nadb.step(0.1, 0.0).expect("nadb step")),
        ("i2sb", i2sb.step(500, 400)),
        ("i2sb last", i2sb.step(100, 0)),
    ];
    assert!(cases.iter().any(|(_, s)| s.noise != 0.0), "a noisy step");
    assert!(
        cases.iter().any(|(_, s)| s.noise == 0.0),
        "a noiseless step"
    );
    cases
}

fn posterior_step() {
    let seed = 99;
    let cell = gpu::SeedCell::new();
    cell.set(seed);
    for shape in SHAPES {
        let out = random(shape, 3, 1.0);
        let x = random(shape, 4, 2.0);
        let e = random(shape, 5, 1.0);
        for (name, s) in step_cases() {
            let stream = Stream::Sampler(3);
            for (dtype, loose) in MODES {
                let (oh, xh, eh) = (
                    as_stored(&out, dtype),
                    as_stored(&x, dtype),
                    as_stored(&e, dtype),
                );
                let expect = cpu::posterior_step(&oh, &xh, &eh, s, seed, stream);
                let got = gpu::posterior_step(
                    &dev(&out, dtype),
                    &dev(&x, dtype),
                    &dev(&e, dtype),
                    s,
                    &cell,
                    stream,
                );
                assert_eq!(got.dtype(), dtype, "posterior type");
                let tol = tolerance(dtype, loose);
                assert_close(&format!("{name} {shape:?} {dtype:?}"), &expect, &got, tol);
            }
        }
    }
}

/// Two seeds set on one cell between launches: each launch follows the
/// seed the cell held when it was queued.
fn posterior_seed_cell() {
    let shape = &[2, 7, 5, 3];
    let out = random(shape, 6, 1.0);
    let x = random(shape, 7, 1.0);
    let e = random(shape, 8, 1.0);
    let s = NadbSchedule::default().step(0.5, 0.4).expect("nadb step");
    assert!(s.noise != 0.0, "a noisy step");
    let stream = Stream::Sampler(1);
    let (od, xd, ed) = (
        dev(&out, DType::F32),
        dev(&x, DType::F32),
        dev(&e, DType::F32),
    );
    let cell = gpu::SeedCell::new();
    let seeds = [11u64, 0xdead_beef_0000_0001];
    let mut got = Vec::new();
    for &seed in &seeds {
        cell.set(seed);
        got.push(gpu::posterior_step(&od, &xd, &ed, s, &cell, stream));
    }
    for (&seed, g) in seeds.iter().zip(&got) {
        let expect = cpu::posterior_step(&out, &x, &e, s, seed, stream);
        assert_close(&format!("seed {seed:#x}"), &expect, g, EXACT);
    }
    let a = got[0].to_host().expect("download");
    let b = got[1].to_host().expect("download");
    assert!(a.max_abs_diff(&b) > 1e-3, "two seeds gave the same noise");
}

fn mse() {
    let shapes: [&[usize]; 4] = [&[2, 7, 5, 3], &[3, 32, 32, 3], &[1], &[5, 300, 301, 3]];
    for shape in shapes {
        let pred = random(shape, 9, 1.0);
        let target = random(shape, 10, 1.5);
        for (dtype, _) in MODES {
            // Both sides see the stored values and subtract in f32, so the
            // loss agrees to f64 summation order even in bf16.
            let expect = loss::mse(&as_stored(&pred, dtype), &as_stored(&target, dtype));
            let got = gpu::mse(&dev(&pred, dtype), &dev(&target, dtype));
            assert_eq!(got.shape(), &[1], "loss shape");
            assert_eq!(got.dtype(), DType::F32, "loss type");
            assert_rel(&format!("mse {shape:?} {dtype:?}"), &expect, &got, EXACT);
            // Deterministic: the same inputs give the same bits.
            let again = gpu::mse(&dev(&pred, dtype), &dev(&target, dtype));
            assert_eq!(
                got.to_host().expect("download").data(),
                again.to_host().expect("download").data(),
                "mse {shape:?} {dtype:?} is not reproducible"
            );
        }
    }
}

fn mse_backward() {
    let dloss = 0.7f32;
    for shape in SHAPES {
        let pred = random(shape, 11, 1.0);
        let target = random(shape, 12, 1.0);
        for (dtype, _) in MODES {
            let expect =
                loss::mse_backward(&as_stored(&pred, dtype), &as_stored(&target, dtype), dloss);
            let d = Tensor::from_vec(&[1], vec![dloss])
                .to_cuda(DType::F32)
                .expect("upload");
            let got = gpu::mse_backward(&dev(&pred, dtype), &dev(&target, dtype), &d);
            assert_eq!(got.dtype(), dtype, "gradient type");
            // bf16 storage rounds each value to 2^-8 relative.
            let tol = tolerance(dtype, 1e-2);
            assert_rel(&format!("dpred {shape:?} {dtype:?}"), &expect, &got, tol);
        }
    }
    // dloss straight from the device, as a training step chains them.
    let shape = &[2, 7, 5, 3];
    let (pred, target) = (random(shape, 13, 1.0), random(shape, 14, 1.0));
    let (pd, td) = (dev(&pred, DType::F32), dev(&target, DType::F32));
    let l = gpu::mse(&pd, &td);
    let lv = l.to_host().expect("download").data()[0];
    let expect = loss::mse_backward(&pred, &target, lv);
    assert_rel(
        "dpred chained",
        &expect,
        &gpu::mse_backward(&pd, &td, &l),
        EXACT,
    );
}

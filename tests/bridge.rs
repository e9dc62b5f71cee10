//! Philox, and the bridges against the closed forms of the spec: the NADB
//! and I2SB marginals and the three posteriors' means and variances,
//! measured over two million draws each.

use nadb::bridge::sample::{sample, Seed};
use nadb::bridge::{Bridge, I2sbSchedule, Method, NadbSchedule};
use nadb::cpu::bridge::{posterior_step, training_pair, StepCoeffs};
use nadb::rng::{fill_normal, normal, philox4x32_10, Stream};
use nadb::Tensor;

#[test]
fn philox_matches_the_random123_known_answers() {
    assert_eq!(
        philox4x32_10([0, 0, 0, 0], [0, 0]),
        [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
    );
    assert_eq!(
        philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
        [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
    );
    assert_eq!(
        philox4x32_10(
            [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
            [0xa4093822, 0x299f31d0]
        ),
        [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
    );
}

/// Mean and variance of a sample, in f64.
fn moments(v: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = v.clone().count() as f64;
    let mean = v.clone().sum::<f64>() / n;
    (mean, v.map(|x| (x - mean).powi(2)).sum::<f64>() / n)
}

const DRAWS: usize = 2_000_000;

#[test]
fn normals_are_standard_and_addressable() {
    let mut z = vec![0.0; DRAWS];
    fill_normal(7, Stream::TrainNoise(3), &mut z);
    let (m, v) = moments(z.iter().map(|&x| x as f64));
    assert!(m.abs() < 5.0 / (DRAWS as f64).sqrt(), "mean {m}");
    assert!(
        (v - 1.0).abs() < 5.0 * (2.0 / DRAWS as f64).sqrt(),
        "variance {v}"
    );
    for i in [0, 1, 2, 3, 4, 4097, DRAWS as u64 - 1] {
        assert_eq!(normal(7, Stream::TrainNoise(3), i), z[i as usize]);
    }
    let mut other = vec![0.0; 8];
    fill_normal(7, Stream::TrainNoise(4), &mut other);
    assert_ne!(&other[..], &z[..8], "streams must differ");
}

/// Two-channel images of DRAWS / 2 pixels with constant channels.
fn constant_image(values: [f32; 2]) -> Tensor {
    let data = (0..DRAWS).map(|i| values[i % 2]).collect();
    Tensor::from_vec(&[1, DRAWS / 2, 1, 2], data)
}

/// Checks that channel ch of `t` has the given mean and standard deviation
/// within five standard errors.
fn assert_channel(what: &str, t: &Tensor, ch: usize, mean: f64, std: f64) {
    let (m, v) = moments(t.data().iter().skip(ch).step_by(2).map(|&x| x as f64));
    let n = (DRAWS / 2) as f64;
    let tol_m = 5.0 * std / n.sqrt() + 1e-6;
    let tol_v = 5.0 * std * std * (2.0 / n).sqrt() + 1e-6;
    assert!(
        (m - mean).abs() < tol_m,
        "{what}: mean {m}, expected {mean}"
    );
    assert!(
        (v - std * std).abs() < tol_v,
        "{what}: variance {v}, expected {}",
        std * std
    );
}

const X0: [f32; 2] = [0.6, -0.3];
const E: [f32; 2] = [-0.2, 0.5];

#[test]
fn nadb_marginal_and_target() {
    let (x0, e) = (constant_image(X0), constant_image(E));
    // Target scale 2 (nadb) and 1 (nadb-nomean).
    let schedules = [Method::Nadb, Method::NadbNoMean].map(NadbSchedule::for_method);
    for (s, step) in schedules
        .into_iter()
        .flat_map(|s| [1, 10, 250, 500, 900, 1000].map(|step| (s, step)))
    {
        let t = step as f64 / 1000.0;
        let c = s.training_coeffs(step);
        assert_eq!(c.time_input, step as f32);
        let (xt, target) = training_pair(
            &x0,
            &e,
            &[(c.xt, c.target)],
            1,
            Stream::TrainNoise(step as u64),
        );
        for ch in 0..2 {
            let (a0, a1) = (X0[ch] as f64, E[ch] as f64);
            let what = format!("NADB t={t} ch{ch}");
            assert_channel(&what, &xt, ch, (1.0 - s.a(t)) * a0 + s.a(t) * a1, s.s(t));
            assert_channel(&what, &target, ch, s.c * (a1 - a0), s.c * s.g(t));
        }
        // Y_t = (X_t - X0) / a(t), element by element.
        for i in (0..DRAWS).step_by(9973) {
            let y = (xt.data()[i] - x0.data()[i]) as f64 / s.a(t);
            assert!(
                (target.data()[i] as f64 / s.c - y).abs() < 1e-4,
                "Y_t at t={t}"
            );
        }
    }
}

#[test]
fn i2sb_schedule_and_marginal() {
    let s = I2sbSchedule::new(0.3);
    assert!(!s.ot_ode);
    // Symmetric beta: std_fwd at n equals std_bwd at 999 - n.
    for n in [0, 10, 499, 800] {
        assert!((s.std_fwd[n] - s.std_bwd[999 - n]).abs() < 1e-12);
    }
    assert!((I2sbSchedule::time_input(0) - 0.1).abs() < 1e-6);
    assert_eq!(I2sbSchedule::time_input(999), 1000.0);
    assert_eq!(I2sbSchedule::steps(5), vec![0, 200, 400, 599, 799, 999]);
    let (x0, x1) = (constant_image(X0), constant_image(E));
    // The OT-ODE keeps the marginal's mean and drops its noise: X_n and
    // the label are deterministic.
    for ot_ode in [false, true] {
        let s = s.clone().with_ot_ode(ot_ode);
        for n in [0, 100, 500, 999] {
            let c = s.training_coeffs(n);
            let (xn, label) = training_pair(
                &x0,
                &x1,
                &[(c.xt, c.target)],
                2,
                Stream::TrainNoise(n as u64),
            );
            let (mu0, mu1, marginal_std) = s.marginal(n);
            let std = if ot_ode { 0.0 } else { marginal_std };
            for ch in 0..2 {
                let (a0, a1) = (X0[ch] as f64, E[ch] as f64);
                let what = format!("I2SB n={n} ch{ch} OT-ODE {ot_ode}");
                assert_channel(&what, &xn, ch, mu0 * a0 + mu1 * a1, std);
                let sf = s.std_fwd[n];
                assert_channel(
                    &what,
                    &label,
                    ch,
                    ((mu0 - 1.0) * a0 + mu1 * a1) / sf,
                    std / sf,
                );
            }
        }
    }
}

/// Draws X_t from a bridge's marginal, runs one posterior step with the
/// oracle network output, and returns X_u.
fn oracle_step(
    x0: &Tensor,
    e: &Tensor,
    draw: nadb::bridge::TrainingCoeffs,
    step: StepCoeffs,
    oracle: impl Fn(f32, f32) -> f32,
) -> Tensor {
    let (xt, _) = training_pair(x0, e, &[(draw.xt, draw.target)], 3, Stream::TrainNoise(0));
    let out: Vec<f32> = xt
        .data()
        .iter()
        .zip(x0.data())
        .map(|(&x, &a)| oracle(x, a))
        .collect();
    let out = Tensor::from_vec(xt.shape(), out);
    posterior_step(&out, &xt, e, step, 4, Stream::Sampler(0))
}

#[test]
fn nadb_posteriors_keep_the_marginal() {
    let s = NadbSchedule::default();
    let (x0, e) = (constant_image(X0), constant_image(E));
    // (t, u): standard posterior above d = 0.375, endpoint-aware below.
    for (t, u, endpoint) in [
        (0.9, 0.6, false),
        (0.6, 0.4, false),
        (0.5, 0.3, true),
        (0.3, 0.1, true),
        (0.1, 0.05, true),
    ] {
        assert_eq!(u < s.threshold, endpoint);
        let step = s.step(t, u).unwrap();
        let at = s.a(t);
        // The oracle's output: c * eps with eps = (X_t - x0) / a(t).
        let xu = oracle_step(
            &x0,
            &e,
            s.training_coeffs((t * 1000.0) as usize),
            step,
            |x, a| (s.c * (x - a) as f64 / at) as f32,
        );
        for ch in 0..2 {
            let (a0, a1) = (X0[ch] as f64, E[ch] as f64);
            let what = format!("NADB posterior {t}->{u} ch{ch}");
            assert_channel(&what, &xu, ch, (1.0 - s.a(u)) * a0 + s.a(u) * a1, s.s(u));
        }
    }
    // The conditional law too, for a fixed X_t: the standard posterior's
    // variance s(u)^2 - rho^2 s(t)^2 and the endpoint one's s(u)^2 - w^2 s(t)^2.
    let (t, u) = (0.8, 0.5);
    let rho = s.a(u) / s.a(t);
    let want = (s.s(u).powi(2) - rho * rho * s.s(t).powi(2)).sqrt();
    assert!((s.step(t, u).unwrap().noise as f64 - want).abs() < 1e-6);
    let (t, u) = (0.3, 0.2);
    let w = u / t;
    let want = (s.s(u).powi(2) - w * w * s.s(t).powi(2)).sqrt();
    assert!((s.step(t, u).unwrap().noise as f64 - want).abs() < 1e-6);
}

#[test]
fn i2sb_posterior_keeps_the_marginal() {
    let s = I2sbSchedule::new(0.3);
    let (x0, x1) = (constant_image(X0), constant_image(E));
    for (n, m) in [(999, 799), (500, 300), (200, 1)] {
        let sf = s.std_fwd[n];
        let xm = oracle_step(&x0, &x1, s.training_coeffs(n), s.step(n, m), |x, a| {
            ((x - a) as f64 / sf) as f32
        });
        let (mu0, mu1, std) = s.marginal(m);
        for ch in 0..2 {
            let what = format!("I2SB posterior {n}->{m} ch{ch}");
            assert_channel(
                &what,
                &xm,
                ch,
                mu0 * X0[ch] as f64 + mu1 * E[ch] as f64,
                std,
            );
        }
    }
}

#[test]
fn the_i2sb_ot_ode_posterior_has_zero_variance() {
    // From the deterministic X_n = mu0 X0 + mu1 X1, with the oracle's x0 =
    // X0, the step is exactly its mean (a2 / f_n^2) X0 + (f_m^2 / f_n^2) X_n:
    // no noise, whatever the seed.
    let s = I2sbSchedule::new(1.0).with_ot_ode(true);
    let (x0, x1) = (constant_image(X0), constant_image(E));
    for (n, m) in [(999, 799), (500, 300), (200, 1), (62, 0)] {
        let step = s.step(n, m);
        assert_eq!(step.noise, 0.0, "{n}->{m}");
        let sf = s.std_fwd[n];
        let xm = oracle_step(&x0, &x1, s.training_coeffs(n), step, |x, a| {
            ((x - a) as f64 / sf) as f32
        });
        let (mu0, mu1, _) = s.marginal(n);
        let (fn2, fm2) = (sf * sf, s.std_fwd[m].powi(2));
        for ch in 0..2 {
            let (a0, a1) = (X0[ch] as f64, E[ch] as f64);
            let mean = (fn2 - fm2) / fn2 * a0 + fm2 / fn2 * (mu0 * a0 + mu1 * a1);
            assert_channel(&format!("OT-ODE {n}->{m} ch{ch}"), &xm, ch, mean, 0.0);
        }
    }
    // The stochastic bridge adds the posterior noise on the same steps.
    assert!(I2sbSchedule::new(1.0).step(500, 300).noise > 0.0);
}

#[test]
fn nadb_target_scale_is_2_with_the_mean_network_and_1_without() {
    assert_eq!(NadbSchedule::for_method(Method::Nadb).c, 2.0);
    assert_eq!(NadbSchedule::for_method(Method::NadbNoMean).c, 1.0);
    assert_eq!(
        NadbSchedule::default(),
        NadbSchedule::for_method(Method::Nadb)
    );
    // Same alpha, k and threshold d = (1 - alpha) / (2 - alpha).
    let (a, b) = (
        NadbSchedule::for_method(Method::Nadb),
        NadbSchedule::for_method(Method::NadbNoMean),
    );
    assert_eq!((a.alpha, a.k, a.threshold), (0.4, 0.75, b.threshold));
    assert!((a.threshold - 0.375).abs() < 1e-12);
}

/// NADB's grid as integer steps of 1/1000.
fn nadb_steps(nfe: usize) -> Vec<usize> {
    NadbSchedule::grid(nfe)
        .iter()
        .map(|t| (t * 1000.0).round() as usize)
        .collect()
}

#[test]
fn grids_for_nfe_16_and_20_accumulate_the_stride_and_round_half_to_even() {
    // NADB, N = 16: stride 62.5, every partial sum exact, the halves go to
    // the even neighbour (62.5 -> 62, 187.5 -> 188).
    assert_eq!(
        nadb_steps(16),
        [0, 62, 125, 188, 250, 312, 375, 438, 500, 562, 625, 688, 750, 812, 875, 938, 1000]
    );
    assert_eq!(nadb_steps(20), (0..=20).map(|k| 50 * k).collect::<Vec<_>>());
    // I2SB, N = 16: stride 999/16 = 62.4375, exact; 499.5 -> 500.
    assert_eq!(
        I2sbSchedule::steps(16),
        [0, 62, 125, 187, 250, 312, 375, 437, 500, 562, 624, 687, 749, 812, 874, 937, 999]
    );
    // I2SB, N = 20: stride 49.95 is not exact in binary; ten additions sum
    // to just under 499.5 (step 499), where rounding 9990 / 20 = 499.5 gives 500.
    assert_eq!(
        I2sbSchedule::steps(20),
        [
            0, 50, 100, 150, 200, 250, 300, 350, 400, 450, 499, 549, 599, 649, 699, 749, 799, 849,
            899, 949, 999
        ]
    );
}

#[test]
fn grids_for_every_nfe_match_the_reference_script() {
    // tests/fixtures/grids.txt is written by scripts/grid_reference.py from
    // the spec's text: `nadb N HASH` for N = 1..=1000, `i2sb N HASH` for
    // N = 1..=999, HASH the FNV-1a 64 of the steps in decimal joined by
    // spaces (`scripts/grid_reference.py --lists` prints the lists).
    let fnv1a64 = |text: &str| {
        text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    };
    let text = include_str!("fixtures/grids.txt");
    let mut seen = [0usize; 2];
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let bridge = words.next().unwrap();
        let nfe: usize = words.next().unwrap().parse().unwrap();
        let want = u64::from_str_radix(words.next().unwrap(), 16).unwrap();
        let got = match bridge {
            "nadb" => nadb_steps(nfe),
            "i2sb" => I2sbSchedule::steps(nfe),
            other => panic!("unknown bridge {other}"),
        };
        let got_text: Vec<String> = got.iter().map(usize::to_string).collect();
        assert_eq!(
            fnv1a64(&got_text.join(" ")),
            want,
            "{bridge} NFE {nfe}: the engine's steps {got:?} differ from the script's \
             (scripts/grid_reference.py --lists)"
        );
        seen[usize::from(bridge == "i2sb")] += 1;
    }
    assert_eq!(seen, [1000, 999]);
}

#[test]
fn nfe_limits_are_the_references() {
    let nadb = Bridge::Nadb(NadbSchedule::default());
    let i2sb = Bridge::I2sb(I2sbSchedule::new(0.3));
    assert_eq!(nadb.plan(1000).unwrap().len(), 1000);
    assert_eq!(i2sb.plan(999).unwrap().len(), 999);
    for (bridge, nfe, max) in [(&nadb, 1001, 1000), (&i2sb, 1000, 999), (&nadb, 0, 1000)] {
        let err = bridge.plan(nfe).unwrap_err().to_string();
        assert!(
            err.contains("--nfe") && err.contains(&format!("between 1 and {max}")),
            "{err}"
        );
    }
}

#[test]
fn a_threshold_that_makes_a_variance_negative_is_an_error() {
    let s = NadbSchedule {
        threshold: 0.0,
        ..Default::default()
    };
    let err = Bridge::Nadb(s).plan(10).unwrap_err();
    assert!(err.0.contains("variance is negative"), "{err}");
    assert!(Bridge::Nadb(NadbSchedule::default()).plan(10).is_ok());
}

#[test]
fn samplers_with_an_oracle_network_return_the_clean_image() {
    let x0 = Tensor::from_vec(&[1, 2, 2, 1], vec![0.5, -0.5, 0.25, 0.0]);
    let e = Tensor::from_vec(&[1, 2, 2, 1], vec![-0.1, 0.3, 0.9, -0.7]);
    let s = NadbSchedule::default();
    for nfe in [1, 5, 10] {
        let out = sample(&Bridge::Nadb(s), &e, nfe, Seed::Host(9), |x, time| {
            let at = s.a(time as f64 / 1000.0);
            let d: Vec<f32> = x
                .data()
                .iter()
                .zip(x0.data())
                .map(|(&xv, &a)| (s.c * (xv - a) as f64 / at) as f32)
                .collect();
            Tensor::from_vec(x.shape(), d)
        })
        .unwrap();
        assert!(out.max_abs_diff(&x0) < 1e-5, "NADB NFE {nfe}");
    }
    for ot_ode in [false, true] {
        let i2sb = I2sbSchedule::new(0.3).with_ot_ode(ot_ode);
        let out = sample(
            &Bridge::I2sb(i2sb.clone()),
            &e,
            10,
            Seed::Host(9),
            |x, time| {
                let n = ((time as f64 / 1000.0 - 1e-4) / (1.0 - 1e-4) * 999.0).round() as usize;
                let sf = i2sb.std_fwd[n];
                let d: Vec<f32> = x
                    .data()
                    .iter()
                    .zip(x0.data())
                    .map(|(&xv, &a)| ((xv - a) as f64 / sf) as f32)
                    .collect();
                Tensor::from_vec(x.shape(), d)
            },
        )
        .unwrap();
        // The last I2SB step keeps a sliver (std_fwd[0]^2 / std_fwd[n]^2) of X_n.
        assert!(out.max_abs_diff(&x0) < 1e-2, "I2SB, OT-ODE {ot_ode}");
    }
    assert_eq!("nadb-nomean".parse::<Method>().unwrap(), Method::NadbNoMean);
    assert!("ddpm".parse::<Method>().is_err());
}

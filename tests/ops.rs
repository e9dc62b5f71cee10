//! Every op: the fast path against the reference, and the tape's gradient
//! against finite differences.

mod common;

use common::{bf16_rounded as round, check_grads, randn, rng};
use nadb::cpu::gemm::{matmul_reference, matmul_with, Kernel, Mat};
use nadb::cpu::{attention, conv, linear};
use nadb::ops;
use nadb::tensor::DType;
use nadb::Tensor;

fn assert_close(name: &str, a: &Tensor, b: &Tensor, tol: f32) {
    assert_eq!(a.shape(), b.shape(), "{name}: shapes");
    let d = a.max_abs_diff(b);
    assert!(d <= tol, "{name}: max difference {d} > {tol}");
}

#[test]
fn gemm_matches_reference_on_strided_views_with_every_kernel() {
    let mut r = rng(1);
    // Tile edges in both dimensions, an inner dimension over one KC block
    // (256), large enough for the threaded path, both operand layouts.
    let shapes = [(3, 5, 7), (130, 67, 90), (257, 300, 65), (40, 520, 300)];
    for kernel in Kernel::available() {
        for &(m, k, n) in &shapes {
            for transposed in [false, true] {
                let a = randn(&mut r, &[m * k], 1.0);
                let b = randn(&mut r, &[k * n], 1.0);
                let (am, bm) = if transposed {
                    (Mat::rows(a.data(), k, m).t(), Mat::rows(b.data(), n, k).t())
                } else {
                    (Mat::rows(a.data(), m, k), Mat::rows(b.data(), k, n))
                };
                for accumulate in [false, true] {
                    let mut fast = randn(&mut r, &[m, n + 3], 1.0).into_vec();
                    let mut slow = fast.clone();
                    matmul_with(kernel, am, bm, &mut fast, n + 3, accumulate);
                    matmul_reference(am, bm, &mut slow, n + 3, accumulate);
                    let (f, s) = (
                        Tensor::from_vec(&[m, n + 3], fast),
                        Tensor::from_vec(&[m, n + 3], slow),
                    );
                    let what =
                        format!("gemm {kernel:?} {m}x{k}x{n} t={transposed} acc={accumulate}");
                    assert_close(&what, &f, &s, 1e-5 * k as f32);
                }
            }
        }
    }
}

/// The bf16 kernel (where the CPU has it) against the reference on the
/// operands rounded to bf16: the products are then exact, only the f32 sums
/// differ in order (convolutions: tests/cpu_bf16.rs).
#[test]
fn bf16_gemm_matches_reference_on_rounded_operands() {
    let Some(kernel) = Kernel::bf16() else {
        println!("skip: this CPU has no AVX512-BF16");
        return;
    };
    let mut r = rng(3);
    for &(m, k, n) in &[(3, 5, 7), (130, 67, 90), (40, 521, 300)] {
        for transposed in [false, true] {
            let a = randn(&mut r, &[m * k], 1.0);
            let b = randn(&mut r, &[k * n], 1.0);
            let (ar, br) = (round(&a), round(&b));
            fn view(t: &Tensor, rows: usize, cols: usize, transposed: bool) -> Mat<'_> {
                if transposed {
                    Mat::rows(t.data(), cols, rows).t()
                } else {
                    Mat::rows(t.data(), rows, cols)
                }
            }
            let mut fast = vec![0.5; m * n];
            let mut slow = fast.clone();
            let (t, bf) = (transposed, kernel);
            matmul_with(bf, view(&a, m, k, t), view(&b, k, n, t), &mut fast, n, true);
            matmul_reference(view(&ar, m, k, t), view(&br, k, n, t), &mut slow, n, true);
            let (f, s) = (
                Tensor::from_vec(&[m, n], fast),
                Tensor::from_vec(&[m, n], slow),
            );
            assert_close(
                &format!("bf16 gemm {m}x{k}x{n} t={transposed}"),
                &f,
                &s,
                1e-5 * k as f32,
            );
        }
    }
}

#[test]
fn fast_exp_is_within_two_ulp_of_f64_exp() {
    let mut worst = 0.0f64;
    let mut x = -87.0f32;
    while x < 88.0 {
        let exact = (x as f64).exp();
        let got = nadb::cpu::math::exp(x) as f64;
        worst = worst.max(((got - exact) / exact).abs());
        x += 0.001_7;
    }
    assert!(worst < 2.4e-7, "worst relative error {worst}");
    assert_eq!(nadb::cpu::math::exp(100.0), f32::INFINITY);
    assert!(nadb::cpu::math::exp(f32::NAN).is_nan());
    assert!(nadb::cpu::math::exp(-200.0) < 1e-37);
    assert_eq!(nadb::cpu::math::exp(0.0), 1.0);
}

/// (n, h, w, cin, cout, k, stride): odd sizes, both kernels, both strides;
/// two take the weight gradient's 8x8 transposes over more than one depth
/// block and more than one task of rows; the last has a row of taps longer
/// than a depth block, so blocks split it mid-tap; the last has more output
/// pixels than a weight-gradient chunk (1024), so partial sums are added;
/// and two inputs narrower than the kernel.
const CONV_CASES: [(usize, usize, usize, usize, usize, usize, usize); 11] = [
    (2, 5, 6, 3, 4, 3, 1),
    (1, 7, 5, 4, 6, 3, 2),
    (2, 4, 4, 5, 3, 1, 1),
    (1, 5, 7, 3, 2, 1, 2),
    (3, 6, 6, 8, 8, 3, 1),
    (1, 20, 18, 16, 12, 3, 1),
    (2, 21, 19, 24, 8, 3, 2),
    (1, 6, 7, 100, 5, 3, 1),
    (1, 34, 33, 8, 4, 3, 1),
    (1, 1, 1, 3, 2, 3, 2),
    (2, 2, 1, 8, 3, 3, 1),
];

#[test]
fn conv_fast_path_matches_reference() {
    let mut r = rng(2);
    for &(n, h, w, cin, cout, k, s) in &CONV_CASES {
        let x = randn(&mut r, &[n, h, w, cin], 1.0);
        let wt = randn(&mut r, &[cout, k, k, cin], 0.5);
        let b = randn(&mut r, &[cout], 0.5);
        let fast = conv::conv2d(&x, &wt, Some(&b), s);
        let slow = conv::conv2d_reference(&x, &wt, Some(&b), s);
        assert_close("conv forward", &fast, &slow, 1e-5);
        let dy = randn(&mut r, fast.shape(), 1.0);
        let f = conv::conv2d_backward(&x, &wt, &dy, s, [true, true, true]);
        let g = conv::conv2d_backward_reference(&x, &wt, &dy, s);
        assert_close(
            "conv dx",
            f.dx.as_ref().unwrap(),
            g.dx.as_ref().unwrap(),
            1e-4,
        );
        assert_close(
            "conv dw",
            f.dw.as_ref().unwrap(),
            g.dw.as_ref().unwrap(),
            1e-4,
        );
        assert_close(
            "conv db",
            f.db.as_ref().unwrap(),
            g.db.as_ref().unwrap(),
            1e-4,
        );
    }
}

#[test]
fn conv_gradients() {
    let mut r = rng(3);
    for &(n, h, w, cin, cout, k, s) in &CONV_CASES {
        let x = randn(&mut r, &[n, h, w, cin], 1.0);
        let wt = randn(&mut r, &[cout, k, k, cin], 0.5);
        let b = randn(&mut r, &[cout], 0.5);
        check_grads(
            "conv with bias",
            vec![x.clone(), wt.clone(), b],
            40,
            1e-4,
            |t, v| ops::conv2d(t, &v[0], &v[1], Some(&v[2]), s),
        );
        check_grads("conv without bias", vec![x, wt], 40, 1e-4, |t, v| {
            ops::conv2d(t, &v[0], &v[1], None, s)
        });
    }
}

#[test]
fn linear_fast_path_matches_reference_and_gradients() {
    let mut r = rng(4);
    let x = randn(&mut r, &[2, 3, 3, 16], 1.0);
    let w = randn(&mut r, &[24, 16], 0.5);
    let b = randn(&mut r, &[24], 0.5);
    let fast = linear::linear(&x, &w, Some(&b));
    let slow = linear::linear_reference(&x, &w, Some(&b));
    assert_close("linear", &fast, &slow, 1e-5);
    assert_eq!(fast.shape(), &[2, 3, 3, 24]);
    check_grads("linear", vec![x, w, b], 40, 1e-4, |t, v| {
        ops::linear(t, &v[0], &v[1], Some(&v[2]))
    });
}

#[test]
fn group_norm_gradients_with_and_without_silu() {
    let mut r = rng(5);
    let x = randn(&mut r, &[2, 3, 4, 8], 2.0);
    let gamma = randn(&mut r, &[8], 1.0);
    let beta = randn(&mut r, &[8], 1.0);
    for silu in [false, true] {
        check_grads(
            "group norm",
            vec![x.clone(), gamma.clone(), beta.clone()],
            40,
            1e-4,
            |t, v| ops::group_norm(t, &v[0], &v[1], &v[2], 4, silu),
        );
    }
}

#[test]
fn group_norm_normalises_each_group() {
    let mut r = rng(6);
    let x = randn(&mut r, &[2, 4, 4, 64], 3.0);
    let (y, _) = nadb::cpu::norm::group_norm(
        &x,
        &Tensor::full(&[64], 1.0),
        &Tensor::zeros(&[64]),
        32,
        false,
    );
    // Group 5 of image 1: channels 10 and 11 of its 16 pixels.
    let vals: Vec<f64> = y.data()[16 * 64..]
        .chunks(64)
        .flat_map(|px| [px[10] as f64, px[11] as f64])
        .collect();
    let mean = vals.iter().sum::<f64>() / vals.len() as f64;
    let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64;
    assert!(
        mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3,
        "mean {mean} var {var}"
    );
}

#[test]
fn group_norm_bits_do_not_depend_on_the_threads() {
    let mut r = rng(7);
    let x = randn(&mut r, &[1, 40, 37, 96], 2.0);
    let gamma = randn(&mut r, &[96], 1.0);
    let beta = randn(&mut r, &[96], 1.0);
    let dy = randn(&mut r, &[1, 40, 37, 96], 1.0);
    let run = || {
        let (y, stats) = nadb::cpu::norm::group_norm(&x, &gamma, &beta, 32, true);
        let (dx, dg, db) =
            nadb::cpu::norm::group_norm_backward(&x, &gamma, &beta, &stats, &dy, true);
        [y, dx, dg, db].map(|t| t.data().iter().map(|v| v.to_bits()).collect::<Vec<u32>>())
    };
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let three = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    assert!(
        one.install(run) == three.install(run),
        "group norm differs between 1 and 3 threads"
    );
}

#[test]
fn elementwise_gradients() {
    let mut r = rng(7);
    let x = randn(&mut r, &[2, 3, 2, 4], 2.0);
    let y = randn(&mut r, &[2, 3, 2, 4], 1.0);
    check_grads("silu", vec![x.clone()], 48, 1e-4, |t, v| {
        ops::silu(t, &v[0])
    });
    check_grads("add", vec![x.clone(), y.clone()], 48, 1e-4, |t, v| {
        ops::add(t, &v[0], &v[1])
    });
    let ss = randn(&mut r, &[2, 8], 1.0);
    check_grads("scale-shift", vec![x.clone(), ss], 48, 1e-4, |t, v| {
        ops::scale_shift(t, &v[0], &v[1])
    });
    let shift = randn(&mut r, &[2, 4], 1.0);
    check_grads("shift", vec![x.clone(), shift], 48, 1e-4, |t, v| {
        ops::scale_shift(t, &v[0], &v[1])
    });
    let z = randn(&mut r, &[2, 3, 2, 5], 1.0);
    check_grads("concat", vec![x, z], 48, 1e-4, |t, v| {
        ops::concat(t, &v[0], &v[1])
    });
}

#[test]
fn scale_shift_values() {
    let x = Tensor::from_vec(&[1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]);
    let ss = Tensor::from_vec(&[1, 4], vec![1.0, -0.5, 10.0, 20.0]);
    let y = nadb::cpu::elementwise::scale_shift(&x, &ss);
    assert_eq!(y.data(), &[12.0, 21.0, 16.0, 22.0]);
}

#[test]
fn resample_values_and_gradients() {
    let x = Tensor::from_vec(&[1, 2, 2, 1], vec![1.0, 2.0, 3.0, 4.0]);
    let up = nadb::cpu::resample::upsample2x(&x);
    assert_eq!(
        up.data(),
        &[1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 3.0, 3.0, 4.0, 4.0]
    );
    let down = nadb::cpu::resample::avgpool2x(&up);
    assert_eq!(down.data(), x.data());
    let pooled =
        nadb::cpu::resample::avgpool2x(&Tensor::from_vec(&[1, 2, 2, 1], vec![1.0, 2.0, 3.0, 6.0]));
    assert_eq!(pooled.data(), &[3.0]);
    let mut r = rng(8);
    let a = randn(&mut r, &[2, 3, 2, 3], 1.0);
    check_grads("upsample", vec![a], 36, 1e-4, |t, v| {
        ops::upsample2x(t, &v[0])
    });
    let b = randn(&mut r, &[2, 4, 6, 3], 1.0);
    check_grads("avgpool", vec![b], 36, 1e-4, |t, v| {
        ops::avgpool2x(t, &v[0])
    });
}

#[test]
fn attention_fast_path_matches_reference_and_gradients() {
    let mut r = rng(9);
    // 2 images, 2x3 tokens, 2 heads of 4 channels.
    let qkv = randn(&mut r, &[2, 2, 3, 24], 1.5);
    let (fast, probs) = attention::attention(&qkv, 4, true);
    let slow = attention::attention_reference(&qkv, 4);
    assert_close("attention", &fast, &slow, 1e-5);
    assert_eq!(probs.map(|p| p.values()), Some(2 * 2 * 36));
    let (inference, none) = attention::attention(&qkv, 4, false);
    assert!(none.is_none(), "inference keeps no probabilities");
    assert_eq!(
        inference.data(),
        fast.data(),
        "keeping the probabilities changes the output"
    );
    assert_eq!(fast.shape(), &[2, 2, 3, 8]);
    check_grads("attention", vec![qkv], 60, 1e-4, |t, v| {
        ops::attention(t, &v[0], 4)
    });
    // At a U-Net shape: 16x16 tokens (several query blocks, the last one
    // partial), 2 heads of 64.
    let big = randn(&mut r, &[1, 16, 15, 384], 1.0);
    assert_close(
        "attention 16x15",
        &attention::attention(&big, 64, false).0,
        &attention::attention_reference(&big, 64),
        1e-4,
    );
}

#[test]
fn time_embedding_values_and_gradient() {
    let t = Tensor::from_vec(&[2], vec![0.0, 500.0]);
    let e = nadb::cpu::embed::timestep_embedding(&t, 8);
    // t = 0: cos = 1, sin = 0.
    assert_eq!(&e.data()[..8], &[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
    // t = 500, i = 1: frequency exp(-ln(10000) / 4) = 0.1.
    assert!((e.data()[8 + 1] - (50.0f64).cos() as f32).abs() < 1e-5);
    assert!((e.data()[8 + 5] - (50.0f64).sin() as f32).abs() < 1e-5);
    let small = Tensor::from_vec(&[3], vec![0.3, 1.7, -0.4]);
    check_grads("time embedding", vec![small], 3, 1e-4, |t, v| {
        ops::time_embedding(t, &v[0], 8, DType::F32)
    });
}

#[test]
fn mse_value_and_gradients() {
    let p = Tensor::from_vec(&[2, 2], vec![1.0, 2.0, 3.0, 4.0]);
    let y = Tensor::from_vec(&[2, 2], vec![1.0, 0.0, 3.0, 2.0]);
    assert_eq!(nadb::cpu::loss::mse(&p, &y).data(), &[2.0]);
    let mut r = rng(10);
    let a = randn(&mut r, &[3, 5], 1.0);
    let b = randn(&mut r, &[3, 5], 1.0);
    check_grads("mse", vec![a, b], 15, 1e-4, |t, v| {
        ops::mse(t, &v[0], &v[1])
    });
}

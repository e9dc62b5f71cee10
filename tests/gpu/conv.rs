//! Convolutions and linear layers (kernels/conv.cu) against `cpu::conv`,
//! `cpu::linear` and `cpu::sum_rows`: forward with and without bias, and
//! all three gradients, at odd shapes (channels that fill no tile, 1x1
//! images, stride 2 over odd sizes, split weight-gradient reductions), in
//! both modes.
//!
//! In bf16 mode the CPU runs on the inputs as the device holds them
//! (uploaded as bf16 and read back), so only the kernel's own rounding is
//! measured.

use crate::common::{assert_close, dev, random, MODES};
use nadb::tensor::{DType, Tensor};
use nadb::{cpu, cuda};

pub const TESTS: &[crate::Test] = &[
    ("conv_forward", forward),
    ("conv_backward", backward),
    ("conv_backward_some", backward_some),
    ("conv_linear_forward", linear_forward),
    ("conv_linear_backward", linear_backward),
];

/// (input NHWC, cout, kernel, stride).
const CONVS: [([usize; 4], usize, usize, usize); 10] = [
    ([2, 7, 5, 3], 5, 3, 1),
    ([2, 7, 5, 3], 5, 3, 2),
    ([1, 9, 11, 33], 17, 1, 1),
    ([1, 9, 11, 33], 17, 3, 2),
    ([1, 9, 11, 33], 17, 1, 2),
    ([2, 16, 16, 64], 64, 3, 1),
    // Both tile edges crossed (105 output pixels, 65 outputs, 70 inputs).
    ([3, 13, 10, 70], 65, 3, 2),
    // Many pixels for few weights: the weight gradient splits its sum.
    ([4, 32, 32, 8], 8, 3, 1),
    // A 1x1 image: every tap but the centre is padding.
    ([1, 1, 1, 3], 2, 3, 2),
    ([2, 2, 3, 1], 1, 3, 1),
];

/// A random tensor as the device holds it in `dtype`: (host copy of the
/// device values, device tensor).
fn input(shape: &[usize], seed: u64, scale: f32, dtype: DType) -> (Tensor, Tensor) {
    let d = dev(&random(shape, seed, scale), dtype);
    (d.to_host().expect("download"), d)
}

fn out_size(size: usize, k: usize, stride: usize) -> usize {
    (size + 2 * (k / 2) - k) / stride + 1
}

fn forward() {
    for (dtype, tol) in MODES {
        for (i, (shape, cout, k, stride)) in CONVS.into_iter().enumerate() {
            let seed = 100 + 10 * i as u64;
            let (x, xd) = input(&shape, seed, 1.0, dtype);
            let (w, wd) = input(&[cout, k, k, shape[3]], seed + 1, 0.5, dtype);
            let (b, bd) = input(&[cout], seed + 2, 1.0, dtype);
            for bias in [false, true] {
                let what = format!("conv2d {dtype:?} {shape:?}->{cout} k{k} s{stride} bias {bias}");
                let want = cpu::conv::conv2d(&x, &w, bias.then_some(&b), stride);
                let got = cuda::conv::conv2d(&xd, &wd, bias.then_some(&bd), stride);
                assert_eq!(got.dtype(), dtype, "{what}: dtype");
                assert_close(&what, &want, &got, tol);
            }
        }
    }
}

fn backward() {
    for (dtype, tol) in MODES {
        for (i, (shape, cout, k, stride)) in CONVS.into_iter().enumerate() {
            let seed = 300 + 10 * i as u64;
            let [n, h, w, cin] = shape;
            let dy_shape = [n, out_size(h, k, stride), out_size(w, k, stride), cout];
            let (x, xd) = input(&shape, seed, 1.0, dtype);
            let (wt, wtd) = input(&[cout, k, k, cin], seed + 1, 0.5, dtype);
            let (dy, dyd) = input(&dy_shape, seed + 2, 1.0, dtype);
            let what = format!("conv2d_backward {dtype:?} {shape:?}->{cout} k{k} s{stride}");
            let want = cpu::conv::conv2d_backward(&x, &wt, &dy, stride, [true; 3]);
            let got = cuda::conv::conv2d_backward(&xd, &wtd, &dyd, stride, [true; 3]);
            let pairs = [
                ("dx", want.dx, got.dx),
                ("dw", want.dw, got.dw),
                ("db", want.db, got.db),
            ];
            for (name, want, got) in pairs {
                let (want, got) = (want.expect("cpu grad"), got.expect("gpu grad"));
                // Parameter gradients are f32 in either mode.
                let stored = if name == "dx" { dtype } else { DType::F32 };
                assert_eq!(got.dtype(), stored, "{what} {name}: dtype");
                assert_close(&format!("{what} {name}"), &want, &got, tol);
            }
        }
    }
}

/// Only the gradients asked for come back.
fn backward_some() {
    let (x, xd) = input(&[1, 9, 11, 33], 500, 1.0, DType::F32);
    let (w, wd) = input(&[17, 3, 3, 33], 501, 0.5, DType::F32);
    let (dy, dyd) = input(&[1, 5, 6, 17], 502, 1.0, DType::F32);
    let g = cuda::conv::conv2d_backward(&xd, &wd, &dyd, 2, [false, true, false]);
    assert!(g.dx.is_none() && g.db.is_none(), "gradients not asked for");
    let want = cpu::conv::conv2d_backward(&x, &w, &dy, 2, [false, true, false]);
    assert_close(
        "conv2d_backward dw alone",
        &want.dw.expect("cpu dw"),
        &g.dw.expect("gpu dw"),
        MODES[0].1,
    );
}

/// (x shape, out features).
const LINEARS: [(&[usize], usize); 4] = [
    (&[5, 33], 17),
    (&[4, 128], 512),
    (&[2, 3, 33], 17),
    (&[1, 1], 1),
];

fn linear_forward() {
    for (dtype, tol) in MODES {
        for (i, (shape, out)) in LINEARS.into_iter().enumerate() {
            let seed = 600 + 10 * i as u64;
            let inp = shape[shape.len() - 1];
            let (x, xd) = input(shape, seed, 1.0, dtype);
            let (w, wd) = input(&[out, inp], seed + 1, 0.5, dtype);
            let (b, bd) = input(&[out], seed + 2, 1.0, dtype);
            for bias in [false, true] {
                let what = format!("linear {dtype:?} {shape:?}->{out} bias {bias}");
                let want = cpu::linear::linear(&x, &w, bias.then_some(&b));
                let got = cuda::conv::linear(&xd, &wd, bias.then_some(&bd));
                assert_eq!(got.dtype(), dtype, "{what}: dtype");
                assert_close(&what, &want, &got, tol);
            }
        }
    }
}

fn linear_backward() {
    for (dtype, tol) in MODES {
        for (i, (shape, out)) in LINEARS.into_iter().enumerate() {
            let seed = 700 + 10 * i as u64;
            let inp = shape[shape.len() - 1];
            let mut dy_shape = shape.to_vec();
            *dy_shape.last_mut().expect("rank >= 1") = out;
            let (x, xd) = input(shape, seed, 1.0, dtype);
            let (w, wd) = input(&[out, inp], seed + 1, 0.5, dtype);
            let (dy, dyd) = input(&dy_shape, seed + 2, 1.0, dtype);
            let what = format!("linear_backward {dtype:?} {shape:?}->{out}");
            let (want_dx, want_dw) = cpu::linear::linear_backward(&x, &w, &dy, true, true);
            let (got_dx, got_dw) = cuda::conv::linear_backward(&xd, &wd, &dyd, true, true);
            assert_close(
                &format!("{what} dx"),
                &want_dx.expect("cpu dx"),
                &got_dx.expect("gpu dx"),
                tol,
            );
            assert_close(
                &format!("{what} dw"),
                &want_dw.expect("cpu dw"),
                &got_dw.expect("gpu dw"),
                tol,
            );
            assert_close(
                &format!("{what} db"),
                &cpu::sum_rows(&dy),
                &cuda::elementwise::sum_rows(&dyd),
                tol,
            );
        }
    }
    let (x, xd) = input(&[5, 33], 790, 1.0, DType::F32);
    let (w, wd) = input(&[17, 33], 791, 0.5, DType::F32);
    let (dy, dyd) = input(&[5, 17], 792, 1.0, DType::F32);
    let (dx, dw) = cuda::conv::linear_backward(&xd, &wd, &dyd, true, false);
    assert!(dw.is_none(), "linear dw not asked for");
    let want = cpu::linear::linear_backward(&x, &w, &dy, true, false).0;
    assert_close(
        "linear_backward dx alone",
        &want.expect("cpu dx"),
        &dx.expect("gpu dx"),
        MODES[0].1,
    );
}

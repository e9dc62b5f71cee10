//! The element-wise kernels against `cpu::elementwise`, `cpu::embed` and
//! `cpu::sum_rows`, forward and backward, at odd and even shapes, in both
//! modes; and the tensor plumbing (fill, axpy, cast, clone).
//!
//! In bf16 mode the CPU runs on the inputs as the device holds them
//! (uploaded as bf16 and read back), so only the device's own rounding is
//! measured.

use crate::common::{assert_close, dev, random, MODES};
use nadb::cpu;
use nadb::cuda::elementwise as gpu;
use nadb::tensor::{DType, Tensor};

pub const TESTS: &[crate::Test] = &[
    ("elementwise_silu", silu),
    ("elementwise_add", add),
    ("elementwise_scale_shift", scale_shift),
    ("elementwise_concat", concat),
    ("elementwise_timestep_embedding", timestep_embedding),
    ("elementwise_sum_rows", sum_rows),
    ("elementwise_fill", fill),
    ("elementwise_axpy", axpy),
    ("elementwise_cast_clone", cast_clone),
];

/// NHWC shapes, odd and even.
const SHAPES: [[usize; 4]; 3] = [[2, 7, 5, 33], [1, 16, 16, 64], [3, 1, 9, 1]];

/// A random tensor as the device holds it in `dtype`: (host copy of the
/// device values, device tensor).
fn input(shape: &[usize], seed: u64, scale: f32, dtype: DType) -> (Tensor, Tensor) {
    let d = dev(&random(shape, seed, scale), dtype);
    (d.to_host().expect("download"), d)
}

fn silu() {
    for (dtype, tol) in MODES {
        for (k, shape) in SHAPES.iter().enumerate() {
            let what = format!("{dtype:?} {shape:?}");
            let (x, xd) = input(shape, 10 + k as u64, 6.0, dtype);
            let (dy, dyd) = input(shape, 20 + k as u64, 1.0, dtype);
            assert_close(
                &format!("silu {what}"),
                &cpu::elementwise::silu(&x),
                &gpu::silu(&xd),
                tol,
            );
            assert_close(
                &format!("silu_backward {what}"),
                &cpu::elementwise::silu_backward(&x, &dy),
                &gpu::silu_backward(&xd, &dyd),
                tol,
            );
        }
    }
}

fn add() {
    for (dtype, tol) in MODES {
        for (k, shape) in SHAPES.iter().enumerate() {
            let (a, ad) = input(shape, 30 + k as u64, 2.0, dtype);
            let (b, bd) = input(shape, 40 + k as u64, 2.0, dtype);
            assert_close(
                &format!("add {dtype:?} {shape:?}"),
                &cpu::elementwise::add(&a, &b),
                &gpu::add(&ad, &bd),
                tol,
            );
        }
    }
}

fn scale_shift() {
    // The last two cut the pixels into several chunks (and c = 3 runs the
    // narrow reduction blocks).
    let shapes: [[usize; 4]; 5] = [
        [2, 7, 5, 33],
        [1, 16, 16, 64],
        [3, 1, 9, 1],
        [2, 64, 64, 19],
        [1, 128, 128, 3],
    ];
    for (dtype, tol) in MODES {
        for (k, shape) in shapes.iter().enumerate() {
            let (n, c) = (shape[0], shape[3]);
            for width in [2 * c, c] {
                let what = format!("{dtype:?} {shape:?} ss [{n}, {width}]");
                let seed = 100 + 10 * k as u64 + width as u64;
                let (x, xd) = input(shape, seed, 1.0, dtype);
                let (ss, ssd) = input(&[n, width], seed + 1, 0.5, dtype);
                let (dy, dyd) = input(shape, seed + 2, 1.0, dtype);
                assert_close(
                    &format!("scale_shift {what}"),
                    &cpu::elementwise::scale_shift(&x, &ss),
                    &gpu::scale_shift(&xd, &ssd),
                    tol,
                );
                let (dx, dss) = cpu::elementwise::scale_shift_backward(&x, &ss, &dy);
                let (dxd, dssd) = gpu::scale_shift_backward(&xd, &ssd, &dyd);
                assert_close(&format!("scale_shift dx {what}"), &dx, &dxd, tol);
                assert_close(&format!("scale_shift dss {what}"), &dss, &dssd, tol);
            }
        }
    }
}

fn concat() {
    let pairs: [([usize; 4], usize); 4] = [
        ([2, 7, 5, 33], 6),
        ([1, 16, 16, 64], 64),
        ([3, 1, 9, 1], 2),
        ([1, 4, 4, 5], 1),
    ];
    for (dtype, tol) in MODES {
        for (k, (shape, cb)) in pairs.iter().enumerate() {
            let [n, h, w, ca] = *shape;
            let what = format!("{dtype:?} {shape:?} ++ {cb}");
            let (a, ad) = input(shape, 200 + k as u64, 1.0, dtype);
            let (b, bd) = input(&[n, h, w, *cb], 210 + k as u64, 1.0, dtype);
            assert_close(
                &format!("concat {what}"),
                &cpu::elementwise::concat(&a, &b),
                &gpu::concat(&ad, &bd),
                tol,
            );
            let (dy, dyd) = input(&[n, h, w, ca + cb], 220 + k as u64, 1.0, dtype);
            let (da, db) = cpu::elementwise::concat_backward(&dy, ca);
            let (dad, dbd) = gpu::concat_backward(&dyd, ca);
            assert_close(&format!("concat_backward da {what}"), &da, &dad, tol);
            assert_close(&format!("concat_backward db {what}"), &db, &dbd, tol);
        }
    }
}

fn timestep_embedding() {
    let t = Tensor::from_vec(&[5], vec![1.0, 250.5, 999.0, 0.0, 37.25]);
    for (dtype, tol) in MODES {
        for dim in [32, 128] {
            let what = format!("{dtype:?} dim {dim}");
            // t in the mode's dtype (the CPU twin's signature).
            let (th, td) = (dev(&t, dtype).to_host().expect("download"), dev(&t, dtype));
            assert_close(
                &format!("timestep_embedding {what}"),
                &cpu::embed::timestep_embedding(&th, dim),
                &gpu::timestep_embedding(&td, dim, dtype),
                tol,
            );
            // t kept in f32, the embedding stored as the mode's dtype.
            let t32 = dev(&t, DType::F32);
            let y = gpu::timestep_embedding(&t32, dim, dtype);
            assert_eq!(y.dtype(), dtype, "embedding dtype");
            assert_close(
                &format!("timestep_embedding f32 t {what}"),
                &cpu::embed::timestep_embedding(&t, dim),
                &y,
                tol,
            );
            let (dy, dyd) = input(&[5, dim], 300 + dim as u64, 1.0, dtype);
            assert_close(
                &format!("timestep_embedding_backward {what}"),
                &cpu::embed::timestep_embedding_backward(&th, &dy),
                &gpu::timestep_embedding_backward(&td, &dyd),
                tol,
            );
            assert_close(
                &format!("timestep_embedding_backward f32 t {what}"),
                &cpu::embed::timestep_embedding_backward(&t, &dy),
                &gpu::timestep_embedding_backward(&t32, &dyd),
                tol,
            );
        }
    }
}

fn sum_rows() {
    let shapes: [[usize; 2]; 5] = [[37, 19], [4096, 64], [100_003, 3], [3, 1000], [1, 1]];
    for (dtype, tol) in MODES {
        for (k, shape) in shapes.iter().enumerate() {
            let (x, xd) = input(shape, 400 + k as u64, 1.0, dtype);
            let got = gpu::sum_rows(&xd);
            assert_eq!(
                got.dtype(),
                DType::F32,
                "sum_rows {dtype:?}: an f32 gradient"
            );
            assert_close(
                &format!("sum_rows {dtype:?} {shape:?}"),
                &cpu::sum_rows(&x),
                &got,
                tol,
            );
            // Deterministic: the same bits again.
            let again = gpu::sum_rows(&xd).to_host().expect("download");
            assert_eq!(
                got.to_host().expect("download").data(),
                again.data(),
                "sum_rows {dtype:?} {shape:?} not deterministic"
            );
        }
    }
    // Rows of a 4-D tensor (a conv bias gradient).
    let (x, xd) = input(&[2, 7, 5, 33], 450, 1.0, DType::F32);
    assert_close(
        "sum_rows NHWC",
        &cpu::sum_rows(&x),
        &gpu::sum_rows(&xd),
        1e-4,
    );
}

fn fill() {
    // One past what the capped grid covers in one sweep.
    let n = 65535 * 256 + 77;
    for (dtype, _) in MODES {
        let t = Tensor::full_cuda(&[n], 1.5, dtype);
        let host = t.to_host().expect("download");
        assert!(
            host.data().iter().all(|&v| v == 1.5),
            "fill {dtype:?}: a value other than 1.5"
        );
        let t = Tensor::full_cuda(&[3, 5, 7], -0.25, dtype);
        gpu::fill(&t, 2.0);
        let host = t.to_host().expect("download");
        assert!(host.data().iter().all(|&v| v == 2.0), "refill {dtype:?}");
    }
}

fn axpy() {
    for (dtype, tol) in MODES {
        for shape in [&[1001][..], &[2, 7, 5, 33][..]] {
            let (y, mut yd) = input(shape, 500, 1.0, dtype);
            let (x, xd) = input(shape, 501, 1.0, dtype);
            let mut expected = y.clone();
            expected.axpy(-0.75, &x);
            gpu::axpy(&mut yd, -0.75, &xd);
            assert_close(&format!("axpy {dtype:?} {shape:?}"), &expected, &yd, tol);
        }
    }
}

fn cast_clone() {
    let x = random(&[3, 11, 13, 5], 600, 3.0);
    let x32 = dev(&x, DType::F32);
    assert_eq!(
        x32.to_host().expect("download").data(),
        x.data(),
        "f32 upload"
    );
    // f32 -> bf16 on the device rounds as the host upload does (to nearest
    // even), and bf16 -> f32 is exact.
    let narrowed = gpu::cast(&x32, DType::Bf16);
    assert_eq!(narrowed.dtype(), DType::Bf16);
    let rounded = dev(&x, DType::Bf16).to_host().expect("download");
    assert_eq!(
        narrowed.to_host().expect("download").data(),
        rounded.data(),
        "cast f32 -> bf16"
    );
    let widened = gpu::cast(&narrowed, DType::F32);
    assert_eq!(widened.dtype(), DType::F32);
    assert_eq!(
        widened.to_host().expect("download").data(),
        rounded.data(),
        "cast bf16 -> f32"
    );
    assert_close("bf16 round trip", &x, &widened, 1e-2);
    // A cast to the same type and a clone are copies: same values, own memory.
    for (dtype, _) in MODES {
        let d = dev(&x, dtype);
        let before = d.to_host().expect("download");
        for copy in [d.clone(), gpu::cast(&d, dtype)] {
            assert_ne!(
                copy.device_ptr(),
                d.device_ptr(),
                "{dtype:?} copy shares memory"
            );
            assert_eq!(copy.dtype(), dtype);
            assert_eq!(copy.to_host().expect("download").data(), before.data());
            gpu::fill(&copy, 9.0);
            assert_eq!(
                d.to_host().expect("download").data(),
                before.data(),
                "{dtype:?}: writing the copy changed the original"
            );
        }
    }
}

//! Group norm (forward and backward, with and without SiLU) against
//! `cpu::norm`, in both precision modes, at shapes that cover: 32 groups of
//! 2 and 3 channels, a few groups of many channels, more than 256 channels
//! (several channel passes per thread), pixel counts that do not divide
//! the pixel lanes, and a large image at batch 1 (reductions split across
//! many CTAs).

use crate::common::{assert_close, dev, random, MODES};
use nadb::cpu::norm as cpu;
use nadb::cuda::norm as gpu;
use nadb::tensor::{DType, Tensor};

/// The values `t` has once stored as `dtype` (identity for f32).
fn rounded(t: &Tensor, dtype: DType) -> Tensor {
    dev(t, dtype).to_host().expect("download")
}

/// `t + offset`, element by element (host).
fn shifted(t: Tensor, offset: f32) -> Tensor {
    let shape = t.shape().to_vec();
    Tensor::from_vec(
        &shape,
        t.into_vec().into_iter().map(|v| v + offset).collect(),
    )
}

fn check(shape: [usize; 4], groups: usize) {
    let c = shape[3];
    let n = shape[0];
    let seed = shape.iter().product::<usize>() as u64 + groups as u64;
    // An offset mean and a spread like an activation's; gamma around 1.
    let x = shifted(random(&shape, seed, 2.0), 1.5);
    let gamma = shifted(random(&[c], seed + 1, 0.5), 1.0);
    let beta = random(&[c], seed + 2, 0.5);
    let dy = random(&shape, seed + 3, 1.0);
    for (dtype, tol) in MODES {
        let (xr, gr, br, dyr) = (
            rounded(&x, dtype),
            rounded(&gamma, dtype),
            rounded(&beta, dtype),
            rounded(&dy, dtype),
        );
        for silu in [false, true] {
            let what = format!("{shape:?} groups {groups} {dtype:?} silu {silu}");
            let (y_ref, stats_ref) = cpu::group_norm(&xr, &gr, &br, groups, silu);
            let (xd, gd, bd, dyd) = (
                dev(&xr, dtype),
                dev(&gr, dtype),
                dev(&br, dtype),
                dev(&dyr, dtype),
            );
            let (y, stats) = gpu::group_norm(&xd, &gd, &bd, groups, silu);
            assert_eq!(y.dtype(), dtype, "{what}: y type");
            assert_eq!(stats.dtype(), DType::F32, "{what}: stats type");
            assert_close(&format!("{what}: y"), &y_ref, &y, tol);
            // The statistics are f32 from the same inputs in both modes.
            let stats_host: Vec<f32> = stats_ref
                .mean
                .iter()
                .zip(&stats_ref.rstd)
                .flat_map(|(&m, &r)| [m, r])
                .collect();
            let stats_ref_t = Tensor::from_vec(&[n, groups, 2], stats_host);
            assert_close(&format!("{what}: stats"), &stats_ref_t, &stats, 1e-4);

            let (dx_ref, dg_ref, db_ref) =
                cpu::group_norm_backward(&xr, &gr, &br, &stats_ref, &dyr, silu);
            let (dx, dg, db) = gpu::group_norm_backward(&xd, &gd, &bd, &stats, &dyd, silu);
            assert_eq!(dx.dtype(), dtype, "{what}: dx type");
            assert_eq!(dg.dtype(), DType::F32, "{what}: dgamma type");
            assert_eq!(db.dtype(), DType::F32, "{what}: dbeta type");
            assert_close(&format!("{what}: dx"), &dx_ref, &dx, tol);
            assert_close(&format!("{what}: dgamma"), &dg_ref, &dg, tol);
            assert_close(&format!("{what}: dbeta"), &db_ref, &db, tol);
        }
    }
}

fn g_2x7x5x64() {
    check([2, 7, 5, 64], 32);
}

fn g_1x9x11x96() {
    check([1, 9, 11, 96], 32);
}

fn g_3x4x4x8() {
    check([3, 4, 4, 8], 4);
}

fn g_1x6x6x12() {
    check([1, 6, 6, 12], 3);
}

fn g_2x3x5x320() {
    check([2, 3, 5, 320], 32);
}

fn g_1x64x64x128() {
    check([1, 64, 64, 128], 32);
}

/// bf16 activations with f32 gamma and beta: gamma is read as bf16, the
/// parameter gradients come back as f32.
fn mixed_gamma() {
    let (shape, groups) = ([2, 5, 6, 64], 32);
    let x = shifted(random(&shape, 71, 2.0), 0.5);
    let gamma = shifted(random(&[64], 72, 0.5), 1.0);
    let beta = random(&[64], 73, 0.5);
    let dy = random(&shape, 74, 1.0);
    let (xr, dyr) = (rounded(&x, DType::Bf16), rounded(&dy, DType::Bf16));
    let (y_ref, stats_ref) = cpu::group_norm(&xr, &gamma, &beta, groups, true);
    let (gd, bd) = (dev(&gamma, DType::F32), dev(&beta, DType::F32));
    let xd = dev(&xr, DType::Bf16);
    let (y, stats) = gpu::group_norm(&xd, &gd, &bd, groups, true);
    assert_eq!(y.dtype(), DType::Bf16);
    assert_close("mixed: y", &y_ref, &y, 3e-2);
    let (dx_ref, dg_ref, db_ref) =
        cpu::group_norm_backward(&xr, &gamma, &beta, &stats_ref, &dyr, true);
    let (dx, dg, db) =
        gpu::group_norm_backward(&xd, &gd, &bd, &stats, &dev(&dyr, DType::Bf16), true);
    assert_eq!(
        (dx.dtype(), dg.dtype(), db.dtype()),
        (DType::Bf16, DType::F32, DType::F32)
    );
    assert_close("mixed: dx", &dx_ref, &dx, 3e-2);
    assert_close("mixed: dgamma", &dg_ref, &dg, 3e-2);
    assert_close("mixed: dbeta", &db_ref, &db, 3e-2);
}

/// Two runs give the same bits (fixed-order reductions, no atomics).
fn deterministic() {
    let shape = [1, 64, 64, 128];
    let x = dev(&random(&shape, 81, 2.0), DType::F32);
    let gamma = dev(&shifted(random(&[128], 82, 0.5), 1.0), DType::F32);
    let beta = dev(&random(&[128], 83, 0.5), DType::F32);
    let dy = dev(&random(&shape, 84, 1.0), DType::F32);
    let run = || {
        let (y, stats) = gpu::group_norm(&x, &gamma, &beta, 32, true);
        let (dx, dg, db) = gpu::group_norm_backward(&x, &gamma, &beta, &stats, &dy, true);
        [y, stats, dx, dg, db].map(|t| t.to_host().expect("download").into_vec())
    };
    assert!(run() == run(), "two runs differ");
}

pub const TESTS: &[crate::Test] = &[
    ("group_norm_2x7x5x64_g32", g_2x7x5x64),
    ("group_norm_1x9x11x96_g32", g_1x9x11x96),
    ("group_norm_3x4x4x8_g4", g_3x4x4x8),
    ("group_norm_1x6x6x12_g3", g_1x6x6x12),
    ("group_norm_2x3x5x320_g32", g_2x3x5x320),
    ("group_norm_1x64x64x128_g32_split", g_1x64x64x128),
    ("group_norm_bf16_with_f32_gamma", mixed_gamma),
    ("group_norm_deterministic", deterministic),
];

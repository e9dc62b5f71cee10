//! Shared by the GPU tests: random inputs, moving them to the device, and
//! comparing a device result with the CPU reference.

use nadb::tensor::{DType, Tensor};

/// Deterministic uniform values in [-scale, scale] (a small LCG: the tests
/// need variety, not quality).
pub fn random(shape: &[usize], seed: u64, scale: f32) -> Tensor {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let n = shape.iter().product();
    let data = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect();
    Tensor::from_vec(shape, data)
}

pub fn dev(t: &Tensor, dtype: DType) -> Tensor {
    t.to_cuda(dtype).expect("upload")
}

/// The two precision modes and their tolerance, relative to the largest
/// magnitude of the reference: f32 tight, bf16 loose.
pub const MODES: [(DType, f32); 2] = [(DType::F32, 1e-4), (DType::Bf16, 3e-2)];

/// Asserts the device tensor matches the CPU reference within `tol`
/// relative to max(1, max |reference|).
pub fn assert_close(what: &str, reference: &Tensor, got: &Tensor, tol: f32) {
    let got = got.to_host().expect("download");
    assert_eq!(reference.shape(), got.shape(), "{what}: shape");
    let scale = reference.data().iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let err = reference.max_abs_diff(&got);
    assert!(
        err <= tol * scale,
        "{what}: max |gpu - cpu| = {err:.3e} > {tol:.0e} x {scale:.3}"
    );
}

/// Whether the tests run on the emulated device, where whole-network
/// tests use smaller images than on a GPU (the same code paths, a CPU's
/// speed).
pub fn emulated() -> bool {
    nadb::cuda::gpu().is_ok_and(|g| g.emulated)
}

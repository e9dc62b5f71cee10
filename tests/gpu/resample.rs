//! Nearest 2x upsampling, 2x2 average pooling and their backwards against
//! `cpu::resample`, in both precision modes, at odd and even sizes (the
//! 2x2 sums need even sides, as on the CPU).

use crate::common::{assert_close, dev, random, MODES};
use nadb::cpu::resample as cpu;
use nadb::cuda::resample as gpu;
use nadb::tensor::Tensor;

type Op = fn(&Tensor) -> Tensor;

/// Runs the CPU and GPU op on the same (type-rounded) input.
fn check(name: &str, cpu_op: Op, gpu_op: Op, shapes: &[[usize; 4]]) {
    for (k, shape) in shapes.iter().enumerate() {
        let x = random(shape, 100 + k as u64, 3.0);
        for (dtype, tol) in MODES {
            let xd = dev(&x, dtype);
            let xr = xd.to_host().expect("download");
            let want = cpu_op(&xr);
            let got = gpu_op(&xd);
            assert_eq!(got.dtype(), dtype, "{name} {shape:?}: type");
            assert_close(&format!("{name} {shape:?} {dtype:?}"), &want, &got, tol);
        }
    }
}

/// Any size (the upsample and the pooling backward).
const ANY: &[[usize; 4]] = &[[2, 3, 5, 7], [1, 4, 6, 16], [3, 1, 1, 3], [1, 8, 8, 320]];
/// Even sides (the pooling and the upsample backward).
const EVEN: &[[usize; 4]] = &[[2, 6, 10, 7], [1, 4, 8, 64], [3, 2, 2, 3], [1, 16, 16, 320]];

fn upsample() {
    check("upsample2x", cpu::upsample2x, gpu::upsample2x, ANY);
}

fn upsample_backward() {
    check(
        "upsample2x_backward",
        cpu::upsample2x_backward,
        gpu::upsample2x_backward,
        EVEN,
    );
}

fn avgpool() {
    check("avgpool2x", cpu::avgpool2x, gpu::avgpool2x, EVEN);
}

fn avgpool_backward() {
    check(
        "avgpool2x_backward",
        cpu::avgpool2x_backward,
        gpu::avgpool2x_backward,
        ANY,
    );
}

pub const TESTS: &[crate::Test] = &[
    ("upsample2x", upsample),
    ("upsample2x_backward", upsample_backward),
    ("avgpool2x", avgpool),
    ("avgpool2x_backward", avgpool_backward),
];

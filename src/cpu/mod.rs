//! The CPU backend: the reference for every op, and the embedded default.
//!
//! One file per op family. Each holds the forward and backward the autograd
//! calls, and a `*_reference` (the definition, in plain loops) wherever the
//! called version is a fast path (rayon, GEMM); tests hold one to the other.

pub mod attention;
pub mod bridge;
pub mod conv;
pub mod elementwise;
pub mod embed;
pub mod gemm;
pub mod linear;
pub mod loss;
pub mod norm;
pub mod pad;
pub mod resample;
pub mod svd;

use crate::tensor::Tensor;
use std::cell::RefCell;

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on a scratch buffer of at least `len` floats that lives as long
/// as the thread: patch matrices are reused across layers and steps instead
/// of being allocated for every call.
pub fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        f(&mut buf[..len])
    })
}

/// Sums a `[.., c]` tensor over everything but its last dimension: the
/// gradient of a bias that was broadcast over rows.
pub fn sum_rows(t: &Tensor) -> Tensor {
    let (_, cols) = t.rows_cols();
    let mut acc = vec![0.0f64; cols];
    for row in t.data().chunks(cols) {
        for (a, v) in acc.iter_mut().zip(row) {
            *a += *v as f64;
        }
    }
    Tensor::from_vec(&[cols], acc.into_iter().map(|v| v as f32).collect())
}

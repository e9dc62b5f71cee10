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
pub mod math;
pub mod norm;
pub mod pad;
pub mod resample;
pub mod svd;

use crate::tensor::Tensor;
use rayon::prelude::*;
use std::cell::RefCell;

thread_local! {
    static SCRATCH: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of `len` floats from this thread's pool of scratch buffers; its
/// contents are whatever the last user left. Give it back with
/// `give_scratch`: patch matrices and packed GEMM operands are then reused
/// across layers and steps instead of being allocated for every call.
/// A zeroed buffer for an op's output: filled by the pool's threads when
/// large (a serial fill, and the page faults of fresh memory, left one core
/// idle between the ops of a training step).
pub fn zeros(len: usize) -> Vec<f32> {
    const PER_TASK: usize = 1 << 16;
    if len <= PER_TASK {
        return vec![0.0; len];
    }
    let mut buf = Vec::with_capacity(len);
    buf.spare_capacity_mut()[..len]
        .par_chunks_mut(PER_TASK)
        .for_each(|chunk| chunk.fill(std::mem::MaybeUninit::new(0.0)));
    // SAFETY: the first `len` elements were just written.
    unsafe { buf.set_len(len) };
    buf
}

pub fn take_scratch(len: usize) -> Vec<f32> {
    let mut buf = SCRATCH.with(|pool| {
        let mut pool = pool.borrow_mut();
        // The smallest buffer that fits, else the largest (grown below).
        let pick = (0..pool.len())
            .filter(|&i| pool[i].capacity() >= len)
            .min_by_key(|&i| pool[i].capacity())
            .or_else(|| (0..pool.len()).max_by_key(|&i| pool[i].capacity()));
        pick.map(|i| pool.swap_remove(i)).unwrap_or_default()
    });
    buf.resize(len, 0.0);
    buf
}

pub fn give_scratch(buf: Vec<f32>) {
    SCRATCH.with(|pool| pool.borrow_mut().push(buf));
}

/// Runs `f` on a scratch buffer of `len` floats (see `take_scratch`);
/// calls nest.
pub fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = take_scratch(len);
    let result = f(&mut buf);
    give_scratch(buf);
    result
}

/// Sums a `[.., c]` tensor over everything but its last dimension: the
/// gradient of a bias that was broadcast over rows. Chunks of rows in
/// parallel, each in f64, added in order (the same bits for any thread
/// count).
pub fn sum_rows(t: &Tensor) -> Tensor {
    const ROWS_PER_TASK: usize = 1024;
    let (_, cols) = t.rows_cols();
    let partials: Vec<Vec<f64>> = t
        .data()
        .par_chunks(ROWS_PER_TASK * cols.max(1))
        .map(|chunk| {
            let mut acc = vec![0.0f64; cols];
            for row in chunk.chunks(cols) {
                for (a, v) in acc.iter_mut().zip(row) {
                    *a += *v as f64;
                }
            }
            acc
        })
        .collect();
    let mut total = vec![0.0f64; cols];
    for part in partials {
        for (t, p) in total.iter_mut().zip(part) {
            *t += p;
        }
    }
    Tensor::from_vec(&[cols], total.into_iter().map(|v| v as f32).collect())
}

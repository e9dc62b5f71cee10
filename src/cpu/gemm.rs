//! The one door to the GEMM crate: `out (+)= a * b` on strided f32 views.
//!
//! Every fast CPU path (convolution, linear, attention) is a matrix product
//! over views of NHWC buffers; strides let transposes and channel slices be
//! read in place instead of copied. Products large enough to pay for threads
//! run on the rayon pool; products issued from inside a rayon task (attention
//! runs one task per head) run on that task's thread, so the pool is never
//! oversubscribed.

use gemm::Parallelism;

/// A read-only matrix view: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy, Debug)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A dense row-major `rows x cols` matrix at the start of `data`.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Mat<'a> {
        Mat::strided(data, rows, cols, cols, 1)
    }

    pub fn strided(data: &'a [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Mat<'a> {
        let m = Mat {
            data,
            rows,
            cols,
            rs,
            cs,
        };
        assert!(
            rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < data.len(),
            "matrix view {rows}x{cols} (strides {rs}, {cs}) runs past a buffer of {}",
            data.len()
        );
        m
    }

    /// The transpose, as a view of the same numbers.
    pub fn t(self) -> Mat<'a> {
        Mat {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
}

/// Below this many multiply-adds a product runs on one thread.
const THREADING_THRESHOLD: usize = 1 << 18;

/// `out = a * b` (or `out += a * b` when `accumulate`), where `out` is
/// row-major with row stride `ldo`.
pub fn matmul(a: Mat, b: Mat, out: &mut [f32], ldo: usize, accumulate: bool) {
    assert_eq!(a.cols, b.rows, "matmul inner dimensions differ");
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        ldo >= n && (m - 1) * ldo + n <= out.len(),
        "matmul output too small"
    );
    if k == 0 {
        if !accumulate {
            for row in out.chunks_mut(ldo).take(m) {
                row[..n].fill(0.0);
            }
        }
        return;
    }
    let parallelism = if m * n * k >= THREADING_THRESHOLD && rayon::current_thread_index().is_none()
    {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    };
    // SAFETY: the asserts above keep every index the product touches inside
    // `a.data`, `b.data` and `out`; `out` is borrowed mutably, so it aliases
    // neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            ldo as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Plain triple loop with the same contract as `matmul`: the reference the
/// fast path is tested against.
pub fn matmul_reference(a: Mat, b: Mat, out: &mut [f32], ldo: usize, accumulate: bool) {
    assert_eq!(a.cols, b.rows, "matmul inner dimensions differ");
    for i in 0..a.rows {
        for j in 0..b.cols {
            let mut acc = 0.0f64;
            for p in 0..a.cols {
                acc += a.data[i * a.rs + p * a.cs] as f64 * b.data[p * b.rs + j * b.cs] as f64;
            }
            let o = &mut out[i * ldo + j];
            *o = if accumulate {
                *o + acc as f32
            } else {
                acc as f32
            };
        }
    }
}

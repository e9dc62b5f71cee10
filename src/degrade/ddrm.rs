//! `blur-uniform` and `blur-gauss`: DDRM's `Deblurring.H` as the reference
//! code runs it (spec section 6), channel-indexing slip included.
//!
//! With `H = U diag(S) V^T` the SVD of the 1-D matrix (S below 3e-2
//! zeroed), `s2 = outer(S, S)` flattened row-major and sorted descending
//! (`ss[p] = s2[perm[p]]`), the reference scales channel c's coefficient
//! `K_c[perm[p]]` of `K_c = V^T X_c V` by `ss[(3p + c) mod N]` instead of by
//! `ss[p]`, then maps back with `Y_c = U M_c U^T`. The permutation,
//! the scaling and the inverse permutation together are one elementwise
//! factor per (channel, coefficient), so an image costs four n x n GEMMs
//! per channel: `Y_c = U ((V^T X_c V) .* F_c) U^T`.
//!
//! Ties in `s2` (every `S_i S_j = S_j S_i`, and all the zeros) keep their
//! row-major order (a stable sort); the reference's unstable GPU sort may
//! order them otherwise, which the spec allows (agreement to 4e-3).
//!
//! Non-square images: the reference only takes square ones. Here an
//! h x w image uses the SVDs of the h x h and the w x w matrices,
//! `K_c = V_h^T X_c V_w`, `s2 = outer(S_h, S_w)` (N = h w) and
//! `Y_c = U_h M_c U_w^T`: for h = w exactly the reference's steps.
//!
//! Singular sides: the uniform H is singular unless its side is 8k or
//! 8k + 1 (the paper's 256 is not); the Gaussian never is. There the slip
//! scales null-space coefficients by nonzero factors, so the output
//! depends on which basis of H's null spaces the SVD returns: the
//! reference leaves it to LAPACK, the engine completes U by Gram-Schmidt
//! (deterministic). On a 36x36 photograph the two differ by 2.4e-3 (max
//! abs) where a nonsingular side agrees to 1e-6.
//!
//! The SVD of each (kernel, side) is computed once per process and cached
//! (U and V kept as f32: the GEMMs run in f32).

use super::{BlurKernel, Op1d};
use crate::bail;
use crate::cpu::gemm::{matmul, Mat};
use crate::cpu::svd::svd;
use crate::error::Result;
use crate::tensor::Tensor;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Singular values of the 1-D matrix below this are zeroed (DDRM's ZERO).
const ZERO: f64 = 3e-2;

/// Decompositions by (kernel, side).
type Cache = Mutex<HashMap<(BlurKernel, usize), Arc<Side>>>;

/// The decomposition of one side's 1-D blur matrix.
struct Side {
    /// Row-major n x n; column j is the j-th singular vector.
    u: Vec<f32>,
    v: Vec<f32>,
    /// Descending, those below `ZERO` set to 0.
    s: Vec<f64>,
}

impl Side {
    fn new(kernel: BlurKernel, n: usize) -> Side {
        let mut dense = vec![0.0; n * n];
        for (i, row) in Op1d::banded_blur(n, &kernel.taps()).rows.iter().enumerate() {
            for &(j, w) in row {
                dense[i * n + j] = w;
            }
        }
        let d = svd(&dense, n);
        let narrow = |m: Vec<f64>| m.into_iter().map(|x| x as f32).collect();
        Side {
            u: narrow(d.u),
            v: narrow(d.v),
            s: d.s
                .into_iter()
                .map(|s| if s < ZERO { 0.0 } else { s })
                .collect(),
        }
    }

    /// The cached decomposition for `kernel` on `n` samples.
    fn cached(kernel: BlurKernel, n: usize) -> Arc<Side> {
        static CACHE: OnceLock<Cache> = OnceLock::new();
        let mut map = CACHE
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.entry((kernel, n))
            .or_insert_with(|| Arc::new(Side::new(kernel, n)))
            .clone()
    }
}

/// Steps 2-4 as one factor per channel and coefficient: `F_c[perm[p]] =
/// ss[(3p + c) mod N]`, coefficients indexed row-major over (row, column).
fn slip_factors(rows: &[f64], cols: &[f64]) -> [Vec<f32>; 3] {
    let s2: Vec<f64> = rows
        .iter()
        .flat_map(|a| cols.iter().map(move |b| a * b))
        .collect();
    let n = s2.len();
    // Descending; ties in row-major order (what a stable sort gives).
    let mut sorted: Vec<(f64, usize)> = s2.iter().copied().zip(0..n).collect();
    sorted.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    [0, 1, 2].map(|c| {
        let mut f = vec![0.0f32; n];
        for (p, &(_, i)) in sorted.iter().enumerate() {
            f[i] = sorted[(3 * p + c) % n].0 as f32;
        }
        f
    })
}

/// The operator on a batch `[n, h, w, 3]` in [-1, 1] (mapped to [0, 1]
/// and back, as the reference does).
pub(super) fn blur(x: &Tensor, kernel: BlurKernel) -> Result<Tensor> {
    let (_, h, w, c) = x.nhwc();
    if c != 3 {
        bail!("needs 3 channels (RGB), got {c}: DDRM's operator tiles its singular values three times");
    }
    let (rows, cols) = (Side::cached(kernel, h), Side::cached(kernel, w));
    let factors = slip_factors(&rows.s, &cols.s);
    let plane = h * w;
    let mut out = vec![0.0f32; x.numel()];
    let (mut a, mut b) = (vec![0.0f32; plane], vec![0.0f32; plane]);
    let (uh, vh) = (Mat::rows(&rows.u, h, h), Mat::rows(&rows.v, h, h));
    let (uw, vw) = (Mat::rows(&cols.u, w, w), Mat::rows(&cols.v, w, w));
    for (src, dst) in x.data().chunks(3 * plane).zip(out.chunks_mut(3 * plane)) {
        for (ch, f) in factors.iter().enumerate() {
            for (p, &v) in a.iter_mut().zip(src.iter().skip(ch).step_by(3)) {
                *p = (v + 1.0) / 2.0;
            }
            matmul(vh.t(), Mat::rows(&a, h, w), &mut b, w, false);
            matmul(Mat::rows(&b, h, w), vw, &mut a, w, false);
            a.iter_mut().zip(f).for_each(|(k, f)| *k *= f);
            matmul(uh, Mat::rows(&a, h, w), &mut b, w, false);
            matmul(Mat::rows(&b, h, w), uw.t(), &mut a, w, false);
            for (d, &y) in dst.iter_mut().skip(ch).step_by(3).zip(&a) {
                *d = y * 2.0 - 1.0;
            }
        }
    }
    Ok(Tensor::from_vec(x.shape(), out))
}

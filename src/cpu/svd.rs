//! Singular value decomposition of a small dense square matrix, in f64, by
//! one-sided (Hestenes) Jacobi: `A = U diag(S) V^T`, S descending.
//!
//! Only the DDRM blur operator needs it (`degrade::ddrm`), once per image
//! side, so it favours accuracy and simplicity over speed: columns of A are
//! rotated pairwise until all are mutually orthogonal (to f64 rounding);
//! V accumulates the rotations, S is the column norms and U the normalised
//! columns. Its cost is about 6 n^3 flops per sweep, and it takes 6 to 10
//! sweeps: 0.3 s for n = 256 and 2.6 s for n = 512 on one core (Xeon,
//! AVX-512).

/// `A = U diag(S) V^T`; `u` and `v` are row-major n x n, column j being
/// the j-th singular vector.
#[derive(Clone, Debug)]
pub struct Svd {
    pub n: usize,
    pub u: Vec<f64>,
    pub s: Vec<f64>,
    pub v: Vec<f64>,
}

/// Sweeps after which Jacobi is declared stuck (it converges in about ten).
const MAX_SWEEPS: usize = 60;

/// `(a, b) <- (c a - s b, s a + c b)`, elementwise.
fn rotate(a: &mut [f64], b: &mut [f64], c: f64, s: f64) {
    for (x, y) in a.iter_mut().zip(b.iter_mut()) {
        let (p, q) = (*x, *y);
        *x = c * p - s * q;
        *y = s * p + c * q;
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The SVD of the row-major n x n matrix `a`.
pub fn svd(a: &[f64], n: usize) -> Svd {
    assert_eq!(a.len(), n * n, "svd: a is not {n} x {n}");
    // Columns of A and of V, each contiguous, so a rotation is two slices.
    let mut cols: Vec<Vec<f64>> = (0..n)
        .map(|j| (0..n).map(|i| a[i * n + j]).collect())
        .collect();
    let mut vcols: Vec<Vec<f64>> = (0..n)
        .map(|j| (0..n).map(|i| f64::from(u8::from(i == j))).collect())
        .collect();
    let tol = f64::EPSILON * n as f64;
    let mut converged = false;
    for _ in 0..MAX_SWEEPS {
        let mut rotated = false;
        for p in 0..n {
            for q in p + 1..n {
                let (lo, hi) = cols.split_at_mut(q);
                let (ap, aq) = (&mut lo[p], &mut hi[0]);
                let (alpha, beta, gamma) = (dot(ap, ap), dot(aq, aq), dot(ap, aq));
                if gamma == 0.0 || gamma.abs() <= tol * (alpha * beta).sqrt() {
                    continue;
                }
                rotated = true;
                // The rotation that zeroes the (p, q) entry of A^T A.
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let c = 1.0 / (1.0 + t * t).sqrt();
                rotate(ap, aq, c, c * t);
                let (vlo, vhi) = vcols.split_at_mut(q);
                rotate(&mut vlo[p], &mut vhi[0], c, c * t);
            }
        }
        if !rotated {
            converged = true;
            break;
        }
    }
    assert!(
        converged,
        "svd: Jacobi did not converge in {MAX_SWEEPS} sweeps"
    );
    let norms: Vec<f64> = cols.iter().map(|c| dot(c, c).sqrt()).collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| norms[j].total_cmp(&norms[i]));
    let s: Vec<f64> = order.iter().map(|&j| norms[j]).collect();
    // Columns of rank-deficient directions (a zero singular value) carry no
    // direction of their own: U is completed there by Gram-Schmidt.
    let negligible = s.first().copied().unwrap_or(0.0) * tol;
    let mut ucols: Vec<Vec<f64>> = Vec::with_capacity(n);
    for (&j, &sigma) in order.iter().zip(&s) {
        let col = if sigma > negligible {
            cols[j].iter().map(|x| x / sigma).collect()
        } else {
            complete(&ucols, n)
        };
        ucols.push(col);
    }
    let to_rows = |columns: &[&Vec<f64>]| -> Vec<f64> {
        let mut m = vec![0.0; n * n];
        for (j, col) in columns.iter().enumerate() {
            for (i, &x) in col.iter().enumerate() {
                m[i * n + j] = x;
            }
        }
        m
    };
    Svd {
        n,
        u: to_rows(&ucols.iter().collect::<Vec<_>>()),
        s,
        v: to_rows(&order.iter().map(|&j| &vcols[j]).collect::<Vec<_>>()),
    }
}

/// A unit vector orthogonal to `basis` (orthonormal, fewer than n
/// vectors): of the standard basis vectors after Gram-Schmidt (projected
/// twice, for accuracy), the one with the largest remainder.
fn complete(basis: &[Vec<f64>], n: usize) -> Vec<f64> {
    let remainder = |k: usize| {
        let mut e: Vec<f64> = (0..n).map(|i| f64::from(u8::from(i == k))).collect();
        for _ in 0..2 {
            for b in basis {
                let d = dot(&e, b);
                e.iter_mut().zip(b).for_each(|(x, y)| *x -= d * y);
            }
        }
        e
    };
    let best = (0..n)
        .map(remainder)
        .max_by(|a, b| dot(a, a).total_cmp(&dot(b, b)))
        .expect("n > 0");
    let norm = dot(&best, &best).sqrt();
    best.iter().map(|x| x / norm).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reconstruct(d: &Svd) -> Vec<f64> {
        let n = d.n;
        let mut m = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                m[i * n + j] = (0..n)
                    .map(|k| d.u[i * n + k] * d.s[k] * d.v[j * n + k])
                    .sum();
            }
        }
        m
    }

    fn assert_orthonormal(m: &[f64], n: usize) {
        for a in 0..n {
            for b in 0..n {
                let d: f64 = (0..n).map(|i| m[i * n + a] * m[i * n + b]).sum();
                let want = if a == b { 1.0 } else { 0.0 };
                assert!((d - want).abs() < 1e-12, "columns {a}, {b}: {d}");
            }
        }
    }

    #[test]
    fn reconstructs_a_banded_matrix_and_a_rank_deficient_one() {
        let n = 12;
        let banded: Vec<f64> = (0..n * n)
            .map(|k| {
                let (i, j) = (k / n, k % n);
                if j + 4 >= i && j < i + 4 {
                    1.0 / 9.0 + 0.01 * (i as f64 - j as f64)
                } else {
                    0.0
                }
            })
            .collect();
        // Rank 2: every row is a mix of two fixed rows.
        let rank2: Vec<f64> = (0..n * n)
            .map(|k| {
                let (i, j) = (k / n, k % n);
                (i as f64 + 1.0) * (j as f64).sin() + (i as f64).cos() * (j % 3) as f64
            })
            .collect();
        for a in [banded, rank2] {
            let d = svd(&a, n);
            assert!(d.s.windows(2).all(|w| w[0] >= w[1]), "{:?}", d.s);
            assert_orthonormal(&d.u, n);
            assert_orthonormal(&d.v, n);
            let back = reconstruct(&d);
            let scale = a.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            let err = a
                .iter()
                .zip(&back)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max);
            assert!(err < 1e-13 * scale, "reconstruction error {err}");
        }
    }

    #[test]
    fn a_2x2_symmetric_matrix_has_its_eigenpairs() {
        // [[a, b], [b, a]]: (a + b, [1, 1]/sqrt 2) and (a - b, [1, -1]/sqrt 2).
        let d = svd(&[0.5, 0.25, 0.25, 0.5], 2);
        assert!((d.s[0] - 0.75).abs() < 1e-15 && (d.s[1] - 0.25).abs() < 1e-15);
        let r = std::f64::consts::FRAC_1_SQRT_2;
        assert!((d.v[0].abs() - r).abs() < 1e-15 && (d.v[0] * d.v[2] - 0.5).abs() < 1e-15);
        assert!((d.u[1] * d.u[3] + 0.5).abs() < 1e-15);
    }
}

//! I2SB's schedule, interpolant, label and posterior, in discrete steps
//! n = 0..999, exactly as the official code (NVlabs/I2SB; spec section 5),
//! with its OT-ODE mode (`--ot-ode`): no noise in the interpolant and none
//! in the posterior, a deterministic bridge.

use super::{space_indices, PlannedStep, TrainingCoeffs};
use crate::cpu::bridge::{Combo, StepCoeffs};
use serde::{Deserialize, Serialize};

pub const STEPS: usize = 1000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct I2sbSchedule {
    pub beta_max: f64,
    /// Forward and backward standard deviations: sqrt of the cumulative
    /// beta from each end.
    pub std_fwd: Vec<f64>,
    pub std_bwd: Vec<f64>,
    /// OT-ODE: training drops `std Z` from X_n, sampling drops the
    /// posterior noise.
    pub ot_ode: bool,
}

impl I2sbSchedule {
    /// beta_max 0.3 for JPEG and super-resolution, 1.0 for deblurring; not
    /// an OT-ODE (see `with_ot_ode`).
    pub fn new(beta_max: f64) -> I2sbSchedule {
        let (lo, hi) = (1e-4f64.sqrt(), (beta_max / STEPS as f64).sqrt());
        let linear: Vec<f64> = (0..STEPS)
            .map(|i| (lo + (hi - lo) * i as f64 / (STEPS - 1) as f64).powi(2))
            .collect();
        // Symmetric: the first half, then the first half reversed.
        let half = &linear[..STEPS / 2];
        let betas: Vec<f64> = half.iter().chain(half.iter().rev()).copied().collect();
        let mut acc = 0.0;
        let std_fwd = betas
            .iter()
            .map(|b| {
                acc += b;
                acc.sqrt()
            })
            .collect();
        acc = 0.0;
        let mut std_bwd: Vec<f64> = betas
            .iter()
            .rev()
            .map(|b| {
                acc += b;
                acc.sqrt()
            })
            .collect();
        std_bwd.reverse();
        I2sbSchedule {
            beta_max,
            std_fwd,
            std_bwd,
            ot_ode: false,
        }
    }

    /// The same schedule as an OT-ODE (`on`) or as the stochastic bridge.
    pub fn with_ot_ode(self, on: bool) -> I2sbSchedule {
        I2sbSchedule { ot_ode: on, ..self }
    }

    /// (mu0, mu1, std) of the marginal at step n.
    pub fn marginal(&self, n: usize) -> (f64, f64, f64) {
        let (f2, b2) = (self.std_fwd[n].powi(2), self.std_bwd[n].powi(2));
        let d = f2 + b2;
        (b2 / d, f2 / d, (f2 * b2 / d).sqrt())
    }

    /// The network's time input at step n: `linspace(1e-4, 1, 1000)[n] * 1000`.
    pub fn time_input(n: usize) -> f32 {
        ((1e-4 + (1.0 - 1e-4) * n as f64 / (STEPS - 1) as f64) * 1000.0) as f32
    }

    /// Training example at step n: `X_n = mu0 X0 + mu1 X1 + std Z` (no
    /// `std Z` as an OT-ODE), `label = (X_n - X0) / std_fwd[n]`.
    pub fn training_coeffs(&self, n: usize) -> TrainingCoeffs {
        let (mu0, mu1, marginal_std) = self.marginal(n);
        let std = if self.ot_ode { 0.0 } else { marginal_std };
        let sf = self.std_fwd[n];
        TrainingCoeffs {
            xt: Combo {
                x0: mu0 as f32,
                e: mu1 as f32,
                z: std as f32,
            },
            target: Combo {
                x0: ((mu0 - 1.0) / sf) as f32,
                e: (mu1 / sf) as f32,
                z: (std / sf) as f32,
            },
            time_input: I2sbSchedule::time_input(n),
        }
    }

    /// Sampling steps for `nfe` evaluations (N < 1000): the reference's
    /// `space_indices(1000, N + 1)`, 0 to 999.
    pub fn steps(nfe: usize) -> Vec<usize> {
        space_indices(STEPS, nfe + 1)
    }

    /// Posterior from step n to m < n with `x0 = X_n - std_fwd[n] out`:
    /// `X_m = (a2/f_n^2) x0 + (f_m^2/f_n^2) X_n + sqrt(f_m^2 a2 / f_n^2) Z'`
    /// with `a2 = f_n^2 - f_m^2`; no noise when m = 0, nor ever as an
    /// OT-ODE.
    pub fn step(&self, n: usize, m: usize) -> StepCoeffs {
        let (fn2, fm2) = (self.std_fwd[n].powi(2), self.std_fwd[m].powi(2));
        let a2 = fn2 - fm2;
        let (k0, k1) = (a2 / fn2, fm2 / fn2);
        StepCoeffs {
            out: (-k0 * self.std_fwd[n]) as f32,
            x: (k0 + k1) as f32,
            e: 0.0,
            noise: if m == 0 || self.ot_ode {
                0.0
            } else {
                (fm2 * a2 / fn2).sqrt() as f32
            },
        }
    }

    pub fn plan(&self, nfe: usize) -> Vec<PlannedStep> {
        let steps = I2sbSchedule::steps(nfe);
        (1..=nfe)
            .rev()
            .map(|i| PlannedStep {
                time_input: I2sbSchedule::time_input(steps[i]),
                coeffs: self.step(steps[i], steps[i - 1]),
            })
            .collect()
    }
}

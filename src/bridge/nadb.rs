//! NADB's noise-aligned interpolant, target and posteriors (spec sections
//! 2 and 4; paper Eq. 5-7 and Algorithm 2).
//!
//! ```text
//! a(t) = t^alpha,  s(t) = k t (1 - t),  g(t) = k t^(1-alpha) (1 - t)
//! X_t = (1 - a) X0 + a E + s Z,         Y_t = (E - X0) + g Z
//! ```
//!
//! The network regresses `c Y_t`; `eps = out / c`.

use super::{space_indices, Method, PlannedStep, TrainingCoeffs};
use crate::bail;
use crate::cpu::bridge::{Combo, StepCoeffs};
use crate::error::Result;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct NadbSchedule {
    pub alpha: f64,
    pub k: f64,
    /// Target scale: the network regresses `c * Y_t`.
    pub c: f64,
    /// Sampler threshold on the destination time: below it the
    /// endpoint-aware posterior is used.
    pub threshold: f64,
}

impl Default for NadbSchedule {
    /// The NADB method's schedule (`for_method(Method::Nadb)`).
    fn default() -> NadbSchedule {
        NadbSchedule::for_method(Method::Nadb)
    }
}

impl NadbSchedule {
    /// The reference code's schedule for a NADB method, on every task:
    /// alpha 0.4, k 0.75, and target scale 2 with the mean network (its
    /// runner regresses 2 Y_t) or 1 without ("NADB w/o Mean" regresses Y_t).
    pub fn for_method(method: Method) -> NadbSchedule {
        let c = if method.uses_mean() { 2.0 } else { 1.0 };
        NadbSchedule::new(0.4, 0.75, c)
    }

    /// With the default threshold `d = (1 - alpha) / (2 - alpha)`.
    pub fn new(alpha: f64, k: f64, c: f64) -> NadbSchedule {
        NadbSchedule {
            alpha,
            k,
            c,
            threshold: (1.0 - alpha) / (2.0 - alpha),
        }
    }

    pub fn a(&self, t: f64) -> f64 {
        t.powf(self.alpha)
    }

    pub fn s(&self, t: f64) -> f64 {
        self.k * t * (1.0 - t)
    }

    pub fn g(&self, t: f64) -> f64 {
        self.k * t.powf(1.0 - self.alpha) * (1.0 - t)
    }

    /// Training example at t = step / 1000, step in 1..=1000.
    pub fn training_coeffs(&self, step: usize) -> TrainingCoeffs {
        let t = step as f64 / 1000.0;
        let (a, s, g, c) = (self.a(t), self.s(t), self.g(t), self.c);
        TrainingCoeffs {
            xt: Combo {
                x0: (1.0 - a) as f32,
                e: a as f32,
                z: s as f32,
            },
            target: Combo {
                x0: -c as f32,
                e: c as f32,
                z: (c * g) as f32,
            },
            time_input: (t * 1000.0) as f32,
        }
    }

    /// The time grid t_0 = 0 < ... < t_N = 1 in integer steps of 1/1000:
    /// the reference's `space_indices(1001, N + 1)` divided by 1000.
    pub fn grid(nfe: usize) -> Vec<f64> {
        space_indices(1001, nfe + 1)
            .into_iter()
            .map(|step| step as f64 / 1000.0)
            .collect()
    }

    /// Step from t to u < t given the network output (spec 4a and 4b).
    pub fn step(&self, t: f64, u: f64) -> Result<StepCoeffs> {
        let (at, au, c) = (self.a(t), self.a(u), self.c);
        if u == 0.0 {
            // The last step returns x0 = X_t - a(t) eps.
            return Ok(StepCoeffs {
                out: (-at / c) as f32,
                x: 1.0,
                e: 0.0,
                noise: 0.0,
            });
        }
        if u < self.threshold {
            let w = u / t;
            let var = self.s(u).powi(2) - w * w * self.s(t).powi(2);
            Ok(StepCoeffs {
                out: (at * (au - 1.0 + w - w * at) / c) as f32,
                x: (1.0 - au + w * at) as f32,
                e: (au - w * at) as f32,
                noise: var.max(0.0).sqrt() as f32,
            })
        } else {
            let rho = au / at;
            let var = self.s(u).powi(2) - rho * rho * self.s(t).powi(2);
            if var < -1e-12 {
                bail!(
                    "threshold d = {} puts the standard posterior at t = {t}, u = {u}, where its variance is negative ({var:.3e}); use a larger d (the default is {})",
                    self.threshold,
                    (1.0 - self.alpha) / (2.0 - self.alpha)
                );
            }
            Ok(StepCoeffs {
                out: (-(at - au) / c) as f32,
                x: 1.0,
                e: 0.0,
                noise: var.max(0.0).sqrt() as f32,
            })
        }
    }

    pub fn plan(&self, nfe: usize) -> Result<Vec<PlannedStep>> {
        let grid = NadbSchedule::grid(nfe);
        (1..=nfe)
            .rev()
            .map(|n| {
                Ok(PlannedStep {
                    time_input: (grid[n] * 1000.0) as f32,
                    coeffs: self.step(grid[n], grid[n - 1])?,
                })
            })
            .collect()
    }
}

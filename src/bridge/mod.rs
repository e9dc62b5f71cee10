//! Diffusion bridges from a degraded image back to a clean one: NADB and
//! its baseline I2SB (../shared/spec/nadb.md, sections 2-5).
//!
//! Each bridge reduces to coefficients: a training pair is two linear
//! combinations of (X0, E, Z) per image, and a sampler step is one linear
//! combination of (network output, state, E, Z'). The math lives in
//! `nadb.rs` and `i2sb.rs`; the element-wise work in `cpu::bridge` (and its
//! GPU twin); the loop in `sample.rs`.

pub mod i2sb;
pub mod nadb;
pub mod sample;

use crate::bail;
use crate::cpu::bridge::{Combo, StepCoeffs};
use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;

pub use i2sb::I2sbSchedule;
pub use nadb::NadbSchedule;

/// The four methods of the paper's comparison (Tables 1 and 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// NADB with the mean network's estimate as the source endpoint.
    Nadb,
    /// NADB from the degraded image itself ("NADB w/o Mean").
    NadbNoMean,
    /// I2SB from the degraded image.
    I2sb,
    /// I2SB from the mean network's estimate ("I2SB w. Mean").
    I2sbMean,
}

pub const METHOD_NAMES: [&str; 4] = ["nadb", "nadb-nomean", "i2sb", "i2sb-mean"];

impl Method {
    pub const ALL: [Method; 4] = [
        Method::Nadb,
        Method::NadbNoMean,
        Method::I2sb,
        Method::I2sbMean,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Method::Nadb => "nadb",
            Method::NadbNoMean => "nadb-nomean",
            Method::I2sb => "i2sb",
            Method::I2sbMean => "i2sb-mean",
        }
    }

    /// Whether the source endpoint is M(X1) rather than X1.
    pub fn uses_mean(self) -> bool {
        matches!(self, Method::Nadb | Method::I2sbMean)
    }

    pub fn is_nadb(self) -> bool {
        matches!(self, Method::Nadb | Method::NadbNoMean)
    }

    /// Refuses an NFE outside the method's limits (see `check_nfe`).
    pub fn check_nfe(self, nfe: usize) -> Result<()> {
        check_nfe(self.is_nadb(), nfe)
    }
}

/// The most network evaluations a sampler takes, as the reference asserts:
/// NADB picks N + 1 of its 1001 grid points (0..=1000), I2SB requires
/// N < 1000 (its 1000 steps hold at most 999 intervals).
fn check_nfe(nadb: bool, nfe: usize) -> Result<()> {
    let (max, family) = match nadb {
        true => (1000, "NADB"),
        false => (i2sb::STEPS - 1, "I2SB"),
    };
    if nfe == 0 || nfe > max {
        bail!("--nfe must be between 1 and {max} for {family}, got {nfe}");
    }
    Ok(())
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Method> {
        match Method::ALL.into_iter().find(|m| m.name() == s) {
            Some(m) => Ok(m),
            None => bail!("unknown method '{s}' (known: {})", METHOD_NAMES.join(", ")),
        }
    }
}

/// One training example's coefficients: `xt = xt.x0 X0 + xt.e E + xt.z Z`,
/// `target = ...` likewise, and the network's time input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainingCoeffs {
    pub xt: Combo,
    pub target: Combo,
    pub time_input: f32,
}

/// One network evaluation of a sampler and the step that follows it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlannedStep {
    pub time_input: f32,
    pub coeffs: StepCoeffs,
}

/// A bridge: the schedule of one of the two families.
#[derive(Clone, Debug, PartialEq)]
pub enum Bridge {
    Nadb(NadbSchedule),
    I2sb(I2sbSchedule),
}

impl Bridge {
    /// Coefficients of a training example drawn from the 32-bit word `w`
    /// (the time is `w mod 1000` on the bridge's 1000-step grid; the modulo
    /// bias is below 3e-7).
    pub fn training_coeffs(&self, w: u32) -> TrainingCoeffs {
        match self {
            Bridge::Nadb(s) => s.training_coeffs(1 + (w % 1000) as usize),
            Bridge::I2sb(s) => s.training_coeffs((w % 1000) as usize),
        }
    }

    /// Coefficients at time t in [0, 1] on the bridge's own grid (NADB:
    /// steps 1..=1000 of 1/1000; I2SB: steps 0..=999).
    pub fn coeffs_at(&self, t: f64) -> TrainingCoeffs {
        match self {
            Bridge::Nadb(s) => s.training_coeffs(((t * 1000.0).round() as usize).clamp(1, 1000)),
            Bridge::I2sb(s) => s.training_coeffs(((t * 999.0).round() as usize).min(999)),
        }
    }

    /// Refuses an NFE outside the family's limits (see `check_nfe`).
    pub fn check_nfe(&self, nfe: usize) -> Result<()> {
        check_nfe(matches!(self, Bridge::Nadb(_)), nfe)
    }

    /// The sampler's `nfe` network evaluations, start to finish.
    pub fn plan(&self, nfe: usize) -> Result<Vec<PlannedStep>> {
        self.check_nfe(nfe)?;
        match self {
            Bridge::Nadb(s) => s.plan(nfe),
            Bridge::I2sb(s) => Ok(s.plan(nfe)),
        }
    }
}

/// The reference's `space_indices(num_steps, count)`: `count` integer steps
/// from 0 to `num_steps - 1`, the float stride `(num_steps - 1) / (count -
/// 1)` added cumulatively from 0.0 and each partial sum rounded half to
/// even (Python's `round`). That differs from rounding `k * stride` half
/// away from zero for some counts, by the tie rule and by the accumulated
/// rounding of the sum (e.g. 17 of 1001: step 62 where that gives 63).
pub fn space_indices(num_steps: usize, count: usize) -> Vec<usize> {
    let stride = if count <= 1 {
        1.0
    } else {
        (num_steps - 1) as f64 / (count - 1) as f64
    };
    let mut sum = 0.0f64;
    (0..count)
        .map(|_| {
            let step = sum.round_ties_even() as usize;
            sum += stride;
            step
        })
        .collect()
}

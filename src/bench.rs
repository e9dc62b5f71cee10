//! `nadb bench`: end-to-end figures on one device, with random weights of
//! a named configuration (speed does not depend on what the weights say):
//!
//! - restoration latency at batch 1 (the method's sampler, after the mean
//!   network for the methods that have one; on the GPU one graph replay
//!   per image) for each NFE,
//! - restoration throughput at a larger batch,
//! - training throughput (forward + backward + AdamW + EMA) of the method's
//!   family without the mean network (nadb-nomean or i2sb), images/s.
//!
//! Each figure is the median of `iters` timed runs after one warm-up run
//! (which on the GPU includes capturing the graph).

use crate::bridge::{Bridge, Method};
use crate::degrade::Task;
use crate::device::Device;
use crate::error::Result;
use crate::nn::{forward_flops, Unet, UnetConfig};
use crate::profile::Span;
use crate::restore::Restorer;
use crate::tensor::Tensor;
use crate::train::{Role, RunSettings, Trainer};
use std::time::Instant;

pub struct BenchPlan {
    pub config: UnetConfig,
    /// Sets the method's defaults (I2SB's beta_max and OT-ODE).
    pub task: Task,
    pub method: Method,
    /// I2SB as an OT-ODE or not (None: the task's default).
    pub ot_ode: Option<bool>,
    /// Side of the restored images.
    pub size: usize,
    pub nfes: Vec<usize>,
    /// Batch of the throughput run (NFE = the last of `nfes`).
    pub batch: usize,
    pub train_batch: usize,
    pub train_size: usize,
    pub iters: usize,
    pub device: Device,
}

/// One measured figure.
pub struct Figure {
    pub what: String,
    pub median_seconds: f64,
    /// Images per second at that median.
    pub images_per_second: f64,
    /// Network FLOPs per second (forward FLOPs; training counts 3x).
    pub tflops: f64,
}

/// Median wall time of `iters` runs of `f` after one warm-up, waiting for
/// the device after each.
fn median_time(iters: usize, device: Device, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    device.synchronize()?;
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters.max(1) {
        let start = Instant::now();
        f()?;
        device.synchronize()?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Uniform noise in [-1, 1]: a stand-in image batch.
fn noise_images(n: usize, side: usize, seed: u64) -> Tensor {
    let mut s = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let data = (0..n * side * side * 3)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    Tensor::from_vec(&[n, side, side, 3], data)
}

impl BenchPlan {
    /// The settings of a run of `method` under this plan.
    fn settings(&self, method: Method) -> Result<RunSettings> {
        RunSettings::new(Role::Bridge(method), self.task).with_ot_ode(self.ot_ode)
    }

    /// The restored method's bridge; an error for a flag that does not fit
    /// it (`--ot-ode` for NADB, an NFE out of range).
    pub fn bridge(&self) -> Result<Bridge> {
        let bridge = self.settings(self.method)?.bridge()?;
        for &nfe in &self.nfes {
            bridge.check_nfe(nfe)?;
        }
        Ok(bridge)
    }
}

/// The restored method's restorer on the plan's device, random weights.
fn restorer(plan: &BenchPlan) -> Result<Restorer> {
    let bridge = plan.bridge()?;
    let net = Unet::new(&plan.config, 1)?;
    let mean = plan
        .method
        .uses_mean()
        .then(|| Unet::new(&plan.config.without_time(), 2))
        .transpose()?;
    Restorer::from_networks(plan.task, plan.method, bridge, net, mean)?.to_device(plan.device)
}

/// The method timed in training (its family, without the mean network), a
/// trainer for it on the plan's device, and a batch of stand-in images.
fn trainer(plan: &BenchPlan) -> Result<(Method, Trainer, Tensor, Tensor)> {
    let trained = if plan.method.is_nadb() {
        Method::NadbNoMean
    } else {
        Method::I2sb
    };
    let settings = RunSettings {
        batch: plan.train_batch,
        crop: plan.train_size,
        ..plan.settings(trained)?
    };
    let trainer = Trainer::new(settings, &plan.config)?.to_device(plan.device)?;
    let clean = noise_images(plan.train_batch, plan.train_size, 4);
    let degraded = noise_images(plan.train_batch, plan.train_size, 5);
    Ok((trained, trainer, clean, degraded))
}

pub fn run(plan: &BenchPlan) -> Result<Vec<Figure>> {
    let method = plan.method;
    let sampler = match plan.bridge()? {
        Bridge::I2sb(s) if s.ot_ode => format!("{method}, OT-ODE"),
        _ => method.to_string(),
    };
    let restorer = restorer(plan)?;
    let mean_plus = if method.uses_mean() { "mean + " } else { "" };
    let flops = |n: usize, side: usize| -> Result<f64> {
        Ok(forward_flops(&plan.config, n, side, side)? as f64)
    };
    let mut figures = Vec::new();
    let restore_figure = |n: usize, nfe: usize| -> Result<Figure> {
        let images = noise_images(n, plan.size, 3);
        let secs = median_time(plan.iters, plan.device, || {
            restorer.restore(&images, nfe, 0).map(drop)
        })?;
        let work = flops(n, plan.size)? * (nfe + usize::from(method.uses_mean())) as f64;
        Ok(Figure {
            what: format!(
                "restore {0}x{0} batch {n} NFE {nfe} ({1}, {mean_plus}{sampler})",
                plan.size, plan.config.name
            ),
            median_seconds: secs,
            images_per_second: n as f64 / secs,
            tflops: work / secs / 1e12,
        })
    };
    for &nfe in &plan.nfes {
        figures.push(restore_figure(1, nfe)?);
    }
    if plan.batch > 1 {
        let nfe = *plan.nfes.last().unwrap_or(&10);
        figures.push(restore_figure(plan.batch, nfe)?);
    }
    let (trained, mut trainer, clean, degraded) = trainer(plan)?;
    let ot_ode = if trainer.settings.i2sb_ot_ode {
        ", OT-ODE"
    } else {
        ""
    };
    let secs = median_time(plan.iters, plan.device, || {
        trainer.train_step(&clean, &degraded).map(drop)
    })?;
    figures.push(Figure {
        what: format!(
            "train step {0}x{0} batch {1} ({2}, {trained}{ot_ode})",
            plan.train_size, plan.train_batch, plan.config.name
        ),
        median_seconds: secs,
        images_per_second: plan.train_batch as f64 / secs,
        tflops: 3.0 * flops(plan.train_batch, plan.train_size)? / secs / 1e12,
    });
    Ok(figures)
}

/// One profiled run: what it was, its wall time and its op spans.
pub struct Profiled {
    pub what: String,
    pub seconds: f64,
    pub spans: Vec<Span>,
}

/// `nadb bench --profile`: one restoration (batch 1, the first NFE) and
/// one training step, each after a warm-up, with every op recorded.
pub fn profile(plan: &BenchPlan) -> Result<Vec<Profiled>> {
    let nfe = *plan.nfes.first().unwrap_or(&1);
    let restorer = restorer(plan)?;
    let images = noise_images(1, plan.size, 3);
    let mut runs = Vec::new();
    let mut profiled = |what: String, mut f: Box<dyn FnMut() -> Result<()> + '_>| -> Result<()> {
        f()?;
        plan.device.synchronize()?;
        let start = Instant::now();
        let (result, spans) =
            crate::profile::record(|| f().and_then(|()| plan.device.synchronize()));
        result?;
        runs.push(Profiled {
            what,
            seconds: start.elapsed().as_secs_f64(),
            spans,
        });
        Ok(())
    };
    profiled(
        format!(
            "restore {0}x{0} batch 1 NFE {nfe} ({1})",
            plan.size, plan.config.name
        ),
        Box::new(|| restorer.restore(&images, nfe, 0).map(drop)),
    )?;
    let (trained, mut trainer, clean, degraded) = trainer(plan)?;
    profiled(
        format!(
            "train step {0}x{0} batch {1} ({2}, {trained})",
            plan.train_size, plan.train_batch, plan.config.name
        ),
        Box::new(|| trainer.train_step(&clean, &degraded).map(drop)),
    )?;
    Ok(runs)
}

pub fn markdown(device_line: &str, figures: &[Figure]) -> String {
    let mut s = format!(
        "{device_line}\n\n| what | median ms | images/s | network TFLOP/s |\n| --- | --- | --- | --- |\n"
    );
    for f in figures {
        s += &format!(
            "| {} | {:.3} | {:.2} | {:.3} |\n",
            f.what,
            f.median_seconds * 1e3,
            f.images_per_second,
            f.tflops
        );
    }
    s
}

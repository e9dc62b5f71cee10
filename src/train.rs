//! Training the mean network M(X1) and the bridge networks.
//!
//! One loop serves both: the mean network regresses X0 from X1; a bridge
//! network regresses its bridge's target from (X_t, t), with E = X1 or
//! E = M(X1) (frozen, EMA weights, no gradient). Every random choice is a
//! function of (seed, step), and the checkpoint carries the raw weights,
//! the EMA weights, AdamW's moments and this run's settings, so `--resume`
//! continues bit for bit where the checkpoint left off.

use crate::autograd::{Tape, Var};
use crate::bail;
use crate::bridge::{Bridge, I2sbSchedule, Method, NadbSchedule};
use crate::checkpoint::{self, Checkpoint, Group, ADAM_M_PREFIX, ADAM_V_PREFIX, EMA_PREFIX};
use crate::cuda::optim::{FlatOptimizer, Hyper};
use crate::data::{Dataset, Loader};
use crate::degrade::Task;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::nn::{Unet, UnetConfig};
use crate::ops;
use crate::optim::{clip_grad_norm, gather_grads, AdamW, Ema};
use crate::rng::{uniform_u32, Stream};
use crate::tensor::{DType, Tensor};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// What a network is trained to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// M(X1) ~ E[X0 | X1].
    Mean,
    /// The bridge network of a method.
    Bridge(#[serde(with = "method_name")] Method),
}

mod method_name {
    use crate::bridge::Method;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(m: &Method, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(m.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Method, D::Error> {
        let name = String::deserialize(d)?;
        name.parse()
            .map_err(|e: crate::Error| serde::de::Error::custom(e.0))
    }
}

/// Everything that defines a run; saved in each checkpoint as JSON
/// (`nadb.training`) and checked on resume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    pub role: Role,
    /// The task name (`degrade::TASK_NAMES`).
    pub task: String,
    pub seed: u64,
    pub batch: usize,
    pub crop: usize,
    pub lr: f32,
    pub warmup: u64,
    /// The step at which a cosine decay after the warm-up reaches zero
    /// (`--lr-schedule cosine`: the run's `--steps`); None keeps the rate
    /// constant after the warm-up. Absent from checkpoints written before
    /// the flag existed: those trained at a constant rate.
    #[serde(default)]
    pub cosine_steps: Option<u64>,
    pub weight_decay: f32,
    pub ema_decay: f32,
    pub clip: f32,
    /// NADB's schedule (NADB methods only).
    pub nadb: Option<NadbSchedule>,
    /// I2SB's beta_max (I2SB methods only).
    pub i2sb_beta_max: Option<f64>,
    /// I2SB as an OT-ODE (I2SB methods only). Absent from checkpoints
    /// written before the mode existed: those trained without it.
    #[serde(default)]
    pub i2sb_ot_ode: bool,
    /// The mean network the source endpoint came from (methods with a mean).
    pub mean_checkpoint: Option<PathBuf>,
    /// The network whose weights the run started from (`--init`), instead
    /// of the seeded random ones. Absent from checkpoints written before
    /// the flag existed: those started from random weights.
    #[serde(default)]
    pub init: Option<PathBuf>,
}

/// `RunSettings` and the number of steps done: the checkpoint's JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingState {
    pub settings: RunSettings,
    pub step: u64,
}

impl RunSettings {
    pub fn task(&self) -> Result<Task> {
        self.task.parse()
    }

    /// The bridge a bridge network was trained for.
    pub fn bridge(&self) -> Result<Bridge> {
        match (self.role, self.nadb, self.i2sb_beta_max) {
            (Role::Bridge(m), Some(s), _) if m.is_nadb() => Ok(Bridge::Nadb(s)),
            (Role::Bridge(m), _, Some(b)) if !m.is_nadb() => Ok(Bridge::I2sb(
                I2sbSchedule::new(b).with_ot_ode(self.i2sb_ot_ode),
            )),
            (role, _, _) => bail!("a {role:?} network has no bridge schedule"),
        }
    }

    /// The rate of the update that ends step `step + 1`: a linear warm-up
    /// to `lr`, then constant, or a half cosine down to zero at
    /// `cosine_steps` (a small final rate lets the weights settle where the
    /// constant rate's gradient noise keeps them moving).
    pub fn learning_rate(&self, step: u64) -> f32 {
        let done = step + 1;
        let warm = (done as f32 / self.warmup.max(1) as f32).min(1.0);
        let decay = match self.cosine_steps {
            Some(end) if done > self.warmup => {
                let span = end.saturating_sub(self.warmup).max(1);
                let progress = ((done - self.warmup) as f64 / span as f64).min(1.0);
                0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            _ => 1.0,
        };
        self.lr * warm * decay as f32
    }

    /// Refuses settings a run cannot train with, naming the flag: checked
    /// before any work (a zero batch would only show as a NaN loss, an EMA
    /// decay of 2 as black restorations, a crop the U-Net cannot halve as
    /// a panic).
    pub fn check(&self, config: &UnetConfig) -> Result<()> {
        if self.batch == 0 {
            bail!("--batch 0: a batch needs at least one image");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!(
                "--lr {}: the learning rate must be positive and finite",
                self.lr
            );
        }
        if let Some(end) = self.cosine_steps {
            if end <= self.warmup {
                bail!(
                    "--lr-schedule cosine: --steps {end} must exceed --warmup {} (the decay runs from the warm-up's end to --steps)",
                    self.warmup
                );
            }
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            bail!(
                "--ema {}: the EMA decay must be in [0, 1) (0.999 is usual)",
                self.ema_decay
            );
        }
        if !(self.clip.is_finite() && self.clip > 0.0) {
            bail!(
                "--clip {}: the gradient-norm clip must be positive and finite",
                self.clip
            );
        }
        if let (Role::Bridge(method), Some(path)) = (self.role, &self.mean_checkpoint) {
            if !method.uses_mean() {
                bail!(
                    "--mean-checkpoint {}: method {method} uses no mean network (nadb and i2sb-mean do)",
                    path.display()
                );
            }
        }
        let m = config.side_multiple();
        if self.crop == 0 || !self.crop.is_multiple_of(m) {
            let below = self.crop / m * m;
            let nearest = match below {
                0 => format!("{m}"),
                b => format!("{b} or {}", b + m),
            };
            bail!(
                "--crop {}: config '{}' needs a multiple of {m} (nearest: {nearest})",
                self.crop,
                config.name
            );
        }
        Ok(())
    }

    /// Settings for a new run of `role` on `task` with the spec's defaults
    /// (the NADB schedule of the method, OT-ODE for I2SB on the paper's
    /// deblurring tasks).
    pub fn new(role: Role, task: Task) -> RunSettings {
        let method = match role {
            Role::Bridge(m) => Some(m),
            Role::Mean => None,
        };
        let is = |nadb: bool| method.is_some_and(|m| m.is_nadb() == nadb);
        RunSettings {
            role,
            task: task.name().to_string(),
            seed: 0,
            batch: 8,
            crop: 64,
            lr: 1e-4,
            warmup: 500,
            cosine_steps: None,
            weight_decay: 0.0,
            ema_decay: 0.999,
            clip: 1.0,
            nadb: method.filter(|m| m.is_nadb()).map(NadbSchedule::for_method),
            i2sb_beta_max: is(false).then(|| task.i2sb_beta_max()),
            i2sb_ot_ode: is(false) && task.i2sb_ot_ode_default(),
            mean_checkpoint: None,
            init: None,
        }
    }

    /// Applies an explicit `--ot-ode` choice (None keeps the default); only
    /// the I2SB methods have the mode.
    pub fn with_ot_ode(self, choice: Option<bool>) -> Result<RunSettings> {
        let Some(on) = choice else {
            return Ok(self);
        };
        match self.role {
            Role::Bridge(m) if !m.is_nadb() => Ok(RunSettings {
                i2sb_ot_ode: on,
                ..self
            }),
            Role::Bridge(m) => Err(no_ot_ode(m)),
            Role::Mean => {
                bail!("--ot-ode applies to the i2sb bridge methods only, not to a mean network")
            }
        }
    }
}

/// The error for `--ot-ode` given with a method that has no OT-ODE mode.
pub fn no_ot_ode(method: Method) -> Error {
    Error(format!(
        "--ot-ode applies to the i2sb methods only, not {method} (a NADB bridge)"
    ))
}

/// What the loop reports after each step.
pub struct Progress {
    pub step: u64,
    pub total: u64,
    pub loss: f32,
    pub images_per_second: f64,
}

/// A network being trained and everything that travels with it.
pub struct Trainer {
    pub settings: RunSettings,
    pub net: Unet,
    pub ema: Ema,
    pub opt: AdamW,
    /// Steps completed.
    pub step: u64,
    /// Stop (and save) at the first step that ends after this: a
    /// wall-clock training budget.
    pub deadline: Option<Instant>,
    /// Check every op's output and gradient for NaN/infinity (slower).
    pub detect_anomaly: bool,
    /// Set (by a signal handler) to stop, and save, after the current step.
    pub interrupt: Option<Arc<AtomicBool>>,
    mean: Option<Unet>,
    /// Set by `to_device` for a GPU run: the device copies and the flat
    /// optimizer that owns the f32 master weights there. `net`, `ema` and
    /// `opt` are then refreshed from it only when saving.
    gpu: Option<GpuRun>,
}

struct GpuRun {
    opt: FlatOptimizer,
    /// The network with its working (f32 or bf16) weights on the device.
    net: Unet,
    mean: Option<Unet>,
    /// Storage type of the working weights and activations.
    dtype: DType,
}

/// Loads a frozen network for inference: the EMA weights where the
/// checkpoint has them, else the raw ones.
pub fn load_inference_net(path: &Path) -> Result<(Unet, Option<TrainingState>)> {
    let ck = Checkpoint::open(path)?;
    let specs = crate::nn::param_specs(&ck.config)?;
    let prefix = if ck.has_group(EMA_PREFIX, &specs)? {
        EMA_PREFIX
    } else {
        ""
    };
    let state = ck
        .training
        .as_deref()
        .map(serde_json::from_str::<TrainingState>)
        .transpose()
        .map_err(|e| {
            Error(format!(
                "checkpoint {}: unreadable training state: {e}",
                path.display()
            ))
        })?;
    Ok((ck.load_unet(prefix)?, state))
}

/// The shipped form of a training checkpoint: its EMA weights alone,
/// stored as bf16, with the run's settings (task, role, schedule) so that
/// `restore` knows what it holds. `mean_checkpoint` replaces the mean
/// network's path the run recorded (shipped files refer to each other).
pub fn export_weights(
    src: &Path,
    out: &Path,
    mean_checkpoint: Option<&Path>,
    replace: bool,
) -> Result<()> {
    let (net, state) = load_inference_net(src)?;
    let Some(mut state) = state else {
        bail!(
            "checkpoint {}: weights only, no training state: its task is unknown",
            src.display()
        );
    };
    if let Some(m) = mean_checkpoint {
        state.settings.mean_checkpoint = Some(m.to_path_buf());
    }
    let json = serde_json::to_string(&state).expect("settings serialise");
    let group = Group {
        prefix: "",
        tensors: net.params().iter().map(|p| &**p).collect(),
    };
    checkpoint::save_as(
        out,
        &net.config,
        net.specs(),
        &[group],
        Some(&json),
        DType::Bf16,
        replace,
    )
}

impl Trainer {
    /// A fresh run. A bridge whose method uses the mean network needs
    /// `settings.mean_checkpoint`.
    pub fn new(settings: RunSettings, config: &UnetConfig) -> Result<Trainer> {
        settings.check(config)?;
        let config = match settings.role {
            Role::Mean => config.without_time(),
            Role::Bridge(_) => config.clone(),
        };
        let net = match &settings.init {
            Some(path) => load_init(path, &config)?,
            None => Unet::new(&config, settings.seed)?,
        };
        let ema = Ema::new(net.params().iter().map(|p| &**p), settings.ema_decay);
        let opt = AdamW::new(
            net.params().iter().map(|p| &**p),
            settings.lr,
            settings.weight_decay,
        );
        let mean = load_mean(&settings)?;
        Ok(Trainer {
            settings,
            net,
            ema,
            opt,
            step: 0,
            deadline: None,
            detect_anomaly: false,
            interrupt: None,
            mean,
            gpu: None,
        })
    }

    /// Continues the run saved at `path`.
    pub fn resume(path: &Path) -> Result<Trainer> {
        let ck = Checkpoint::open(path)?;
        let Some(json) = ck.training.as_deref() else {
            bail!(
                "checkpoint {}: weights only, no training state to resume",
                path.display()
            );
        };
        let state: TrainingState = serde_json::from_str(json).map_err(|e| {
            Error(format!(
                "checkpoint {}: unreadable training state: {e}",
                path.display()
            ))
        })?;
        let specs = crate::nn::param_specs(&ck.config)?;
        let net = ck.load_unet("")?;
        let ema = Ema {
            decay: state.settings.ema_decay,
            weights: ck.load_group(EMA_PREFIX, &specs)?,
        };
        let mut opt = AdamW::new(
            net.params().iter().map(|p| &**p),
            state.settings.lr,
            state.settings.weight_decay,
        );
        opt.m = ck.load_group(ADAM_M_PREFIX, &specs)?;
        opt.v = ck.load_group(ADAM_V_PREFIX, &specs)?;
        opt.steps = state.step;
        let mean = load_mean(&state.settings)?;
        Ok(Trainer {
            settings: state.settings,
            net,
            ema,
            opt,
            step: state.step,
            deadline: None,
            detect_anomaly: false,
            interrupt: None,
            mean,
            gpu: None,
        })
    }

    /// Moves training to `device`: on the GPU the master weights, moments
    /// and EMA move into one flat optimizer there.
    pub fn to_device(mut self, device: Device) -> Result<Trainer> {
        let Device::Cuda(dtype) = device else {
            return Ok(self);
        };
        let master: Vec<Tensor> = self.net.params().iter().map(|p| (**p).clone()).collect();
        let (opt, working) = FlatOptimizer::new(
            &master,
            &self.opt.m,
            &self.opt.v,
            &self.ema.weights,
            dtype,
            self.opt.steps,
        )?;
        self.gpu = Some(GpuRun {
            opt,
            net: Unet::from_params(&self.net.config, working)?,
            mean: self.mean.as_ref().map(|m| m.to_cuda(dtype)).transpose()?,
            dtype,
        });
        Ok(self)
    }

    /// Copies the GPU run's weights, moments and EMA back into `net`,
    /// `ema` and `opt` (before a save).
    fn sync_from_device(&mut self) -> Result<()> {
        let Some(gpu) = &self.gpu else {
            return Ok(());
        };
        let (master, m, v, ema) = gpu.opt.to_host()?;
        for (p, new) in self.net.params_mut().zip(master) {
            *p = new;
        }
        self.opt.m = m;
        self.opt.v = v;
        self.opt.steps = self.step;
        self.ema.weights = ema;
        Ok(())
    }

    /// Saves the run to `path`, replacing it.
    pub fn save(&mut self, path: &Path) -> Result<()> {
        self.save_to(path, true)
    }

    /// Saves the run to `path`, replacing an existing file only if
    /// `replace`.
    fn save_to(&mut self, path: &Path, replace: bool) -> Result<()> {
        self.sync_from_device()?;
        let state = TrainingState {
            settings: self.settings.clone(),
            step: self.step,
        };
        let json = serde_json::to_string(&state).expect("settings serialise");
        let groups = [
            Group {
                prefix: "",
                tensors: self.net.params().iter().map(|p| &**p).collect(),
            },
            Group {
                prefix: EMA_PREFIX,
                tensors: self.ema.weights.iter().collect(),
            },
            Group {
                prefix: ADAM_M_PREFIX,
                tensors: self.opt.m.iter().collect(),
            },
            Group {
                prefix: ADAM_V_PREFIX,
                tensors: self.opt.v.iter().collect(),
            },
        ];
        checkpoint::save_as(
            path,
            &self.net.config,
            self.net.specs(),
            &groups,
            Some(&json),
            DType::F32,
            replace,
        )
    }

    /// The network's input, time input and regression target for a batch.
    fn example(
        &self,
        clean: &Tensor,
        degraded: &Tensor,
        step: u64,
    ) -> Result<(Tensor, Option<Tensor>, Tensor)> {
        let s = &self.settings;
        if s.role == Role::Mean {
            // The mean network learns the residual X0 - X1 (see `source_endpoint`).
            let mut residual = clean.clone();
            residual.sub_assign(degraded);
            return Ok((degraded.clone(), None, residual));
        }
        let mean = match &self.gpu {
            Some(g) => g.mean.as_ref(),
            None => self.mean.as_ref(),
        };
        let source = source_endpoint(mean, degraded);
        let bridge = s.bridge()?;
        let n = clean.shape()[0];
        let coeffs: Vec<_> = (0..n as u64)
            .map(|b| bridge.training_coeffs(uniform_u32(s.seed, Stream::TrainTime(step), b)))
            .collect();
        let pairs: Vec<_> = coeffs.iter().map(|c| (c.xt, c.target)).collect();
        let noise = Stream::TrainNoise(step);
        let (xt, target) = ops::training_pair(clean, &source, &pairs, s.seed, noise);
        // f32 on either backend (bf16 cannot hold t * 1000 exactly).
        let times = Tensor::from_vec(&[n], coeffs.iter().map(|c| c.time_input).collect());
        let times = match clean.is_cuda() {
            true => times.to_cuda(DType::F32)?,
            false => times,
        };
        Ok((xt, Some(times), target))
    }

    /// One optimiser step on a batch; returns the loss before the update.
    /// A non-finite loss or gradient stops here, before the weights change,
    /// with an error naming the step and the op or layer.
    pub fn train_step(&mut self, clean: &Tensor, degraded: &Tensor) -> Result<f32> {
        let on_device;
        let (clean, degraded) = match &self.gpu {
            Some(g) => {
                on_device = (clean.to_cuda(g.dtype)?, degraded.to_cuda(g.dtype)?);
                (&on_device.0, &on_device.1)
            }
            None => (clean, degraded),
        };
        let (input, times, target) = self.example(clean, degraded, self.step)?;
        let s = &self.settings;
        let step = self.step + 1;
        let tape = if self.detect_anomaly {
            Tape::detecting_anomalies()
        } else {
            Tape::new()
        };
        let net = self.gpu.as_ref().map_or(&self.net, |g| &g.net);
        let params = net.bind(&tape);
        let t = times.map(Var::constant);
        let input = Var::constant(input);
        let out = net.forward(&tape, &params, &input, t.as_ref());
        let loss = ops::mse(&tape, &out, &Var::constant(target));
        if let Some(a) = tape.anomaly() {
            bail!("step {step}: {a}");
        }
        // The CPU stops at a non-finite loss here. The GPU reads the loss
        // only once the update is queued (the one host synchronisation of
        // a step, so the host queues the backward while the forward runs);
        // there a non-finite loss gates the update, which changes nothing.
        if self.gpu.is_none() {
            let l = loss.value().data()[0];
            if !l.is_finite() {
                bail!("step {step}: the loss is {l}");
            }
        }
        let mut grads = tape.backward(&loss);
        if let Some(a) = tape.anomaly() {
            bail!("step {step}: {a}");
        }
        let mut g = gather_grads(&mut grads, &params);
        let loss = loss.shared();
        drop((params, out, grads, tape));
        let lr = s.learning_rate(self.step);
        if let Some(gpu) = &mut self.gpu {
            let hyper = Hyper {
                lr,
                beta1: self.opt.beta1,
                beta2: self.opt.beta2,
                eps: self.opt.eps,
                weight_decay: self.opt.weight_decay,
                clip: s.clip,
                ema_decay: self.ema.decay_at(self.step + 1),
            };
            let grads: Vec<&Tensor> = g.iter().collect();
            crate::profile::span("optimizer", &grads, 0.0, || {
                gpu.opt.queue_step(&g, &hyper, Some(&loss))
            });
            // false: a non-finite loss or gradient norm; nothing was updated.
            let (taken, loss_value) = gpu.opt.finish_step()?;
            if !loss_value.is_finite() {
                bail!("step {step}: the loss is {loss_value}");
            }
            if !taken {
                bail!("step {step}: {}", non_finite_layer(&g, self.net.specs())?);
            }
            self.step += 1;
            return Ok(loss_value);
        }
        if !g.iter().all(Tensor::all_finite) {
            bail!("step {step}: {}", non_finite_layer(&g, self.net.specs())?);
        }
        crate::profile::span("optimizer", &[], 0.0, || {
            clip_grad_norm(&mut g, s.clip);
            self.opt.lr = lr;
            self.opt.step(self.net.params_mut(), &g);
            let decay = self.ema.decay_at(self.step + 1);
            self.ema
                .update(self.net.params().iter().map(|p| &**p), decay);
        });
        self.step += 1;
        Ok(loss.data()[0])
    }

    /// Trains up to `total` steps on `data` (or until the deadline or an
    /// interrupt), saving to `path` every `save_every` steps and at the end.
    pub fn run(
        &mut self,
        data: Arc<Dataset>,
        total: u64,
        path: &Path,
        save_every: u64,
        mut report: impl FnMut(&Progress),
    ) -> Result<()> {
        let s = self.settings.clone();
        let loader = Loader::spawn(data, s.task()?, s.batch, s.seed, self.step, total);
        let mut last = Instant::now();
        // A new run's first save must not replace a file that appeared
        // meanwhile (another run given the same -o); later saves replace
        // this run's own checkpoint.
        let mut replace = path.exists();
        while self.step < total {
            let batch = loader.next()?;
            debug_assert_eq!(batch.step, self.step);
            let loss = self
                .train_step(&batch.clean, &batch.degraded)
                .map_err(|e| {
                    let kept = if path.exists() {
                        "is kept"
                    } else {
                        "was never written"
                    };
                    Error(format!(
                        "{e}; training stopped, the last good checkpoint {} {kept}",
                        path.display()
                    ))
                })?;
            let now = Instant::now();
            report(&Progress {
                step: self.step,
                total,
                loss,
                images_per_second: s.batch as f64 / (now - last).as_secs_f64(),
            });
            last = now;
            let out_of_time = self.deadline.is_some_and(|d| now >= d);
            let interrupted = self
                .interrupt
                .as_ref()
                .is_some_and(|f| f.load(Ordering::SeqCst));
            let stop = out_of_time || interrupted;
            if self.step.is_multiple_of(save_every.max(1)) || self.step == total || stop {
                self.save_to(path, replace)?;
                replace = true;
            }
            if stop {
                break;
            }
        }
        Ok(())
    }
}

/// The starting weights of a fine-tune (`--init`): the EMA weights of a
/// checkpoint or an exported network, which must have the run's layers.
/// The task and method may differ (the reference fine-tunes I2SB from
/// weights trained for another purpose); the optimiser starts fresh.
fn load_init(path: &Path, config: &UnetConfig) -> Result<Unet> {
    let (net, _) = load_inference_net(path).map_err(|e| Error(format!("--init: {}", e.0)))?;
    if net.config != *config {
        let kind = |c: &UnetConfig| {
            let role = if c.time_input { "bridge" } else { "mean" };
            format!("'{}' {role} network", c.name)
        };
        bail!(
            "--init {}: is a {}, not a {} like this run's (or its layers differ)",
            path.display(),
            kind(&net.config),
            kind(config)
        );
    }
    Ok(net)
}

fn load_mean(settings: &RunSettings) -> Result<Option<Unet>> {
    match settings.role {
        Role::Bridge(m) if m.uses_mean() => {
            let Some(path) = &settings.mean_checkpoint else {
                bail!("method {m} needs a mean network: pass --mean-checkpoint (made by `nadb train-mean`)");
            };
            let (net, state) = load_inference_net(path)?;
            if let Some(state) = state {
                if state.settings.role != Role::Mean || state.settings.task != settings.task {
                    bail!(
                        "checkpoint {} is a {:?} network for task {}, not a mean network for {}",
                        path.display(),
                        state.settings.role,
                        state.settings.task,
                        settings.task
                    );
                }
            }
            Ok(Some(net))
        }
        _ => Ok(None),
    }
}

/// Names the first parameter whose gradient holds a NaN or infinity.
fn non_finite_layer(grads: &[Tensor], specs: &[crate::nn::ParamSpec]) -> Result<String> {
    for (g, spec) in grads.iter().zip(specs) {
        if !g.to_host()?.all_finite() {
            return Ok(format!("non-finite gradient in layer '{}'", spec.name));
        }
    }
    Ok("non-finite gradient norm".into())
}

/// The bridge's source endpoint E for degraded images X1: the mean
/// estimate `M(X1) = X1 + U(X1)` when there is a mean network, else X1.
/// The mean network's U-Net predicts the residual, so an untrained one
/// (zero output layer) starts at the identity instead of at zero.
pub fn source_endpoint(mean: Option<&Unet>, degraded: &Tensor) -> Tensor {
    let mut out = degraded.clone();
    if let Some(mean) = mean {
        out.add_assign(&infer(mean, degraded, None));
    }
    out
}

/// One no-grad forward pass.
pub fn infer(net: &Unet, x: &Tensor, time_input: Option<f32>) -> Tensor {
    let n = x.shape()[0];
    // f32 on either backend: t * 1000 up to 1000 does not survive bf16's
    // 8-bit mantissa. A fill, not an upload, so a graph can capture it.
    let t = time_input.map(|t| match x.is_cuda() {
        true => Tensor::full_cuda(&[n], t, DType::F32),
        false => Tensor::full(&[n], t),
    });
    infer_at(net, x, t)
}

/// One no-grad forward pass with a time input per image (f32 `[n]`, on the
/// backend of `x`).
pub fn infer_at(net: &Unet, x: &Tensor, times: Option<Tensor>) -> Tensor {
    let tape = Tape::no_grad();
    let params = net.bind(&tape);
    let t = times.map(Var::constant);
    net.forward(&tape, &params, &Var::constant(x.clone()), t.as_ref())
        .into_tensor()
}

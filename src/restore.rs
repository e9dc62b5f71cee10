//! Restoration: degraded images in, restored images out, through a trained
//! bridge (and the mean network where the method uses one).
//!
//! Any image size: images are padded by reflection to what the U-Net needs
//! and cropped back. The checkpoint says which task and method it was
//! trained for; asking it for another task is an error, not a silent wrong
//! answer.

use crate::bail;
use crate::bridge::sample::sample;
use crate::bridge::{Bridge, Method};
use crate::cpu::pad::{crop, pad_reflect};
use crate::degrade::Task;
use crate::error::Result;
use crate::nn::Unet;
use crate::tensor::Tensor;
use crate::train::{infer, load_inference_net, Role};
use std::path::Path;

/// A mean network checked to be one, for `task`.
pub fn load_mean_net(path: &Path, task: Task) -> Result<Unet> {
    let (net, state) = load_inference_net(path)?;
    match state {
        Some(s) if s.settings.role == Role::Mean && s.settings.task == task.name() => Ok(net),
        Some(s) => bail!(
            "checkpoint {} is a {:?} network for task {}, not a mean network for {task}",
            path.display(),
            s.settings.role,
            s.settings.task
        ),
        None => bail!(
            "checkpoint {} has no training state: its task is unknown",
            path.display()
        ),
    }
}

pub struct Restorer {
    pub task: Task,
    pub method: Method,
    pub(crate) bridge: Bridge,
    /// The bridge network (EMA weights).
    pub(crate) net: Unet,
    /// The mean network, for methods that start from M(X1).
    pub(crate) mean: Option<Unet>,
}

impl Restorer {
    /// Loads a bridge checkpoint for `task`; the mean network comes from
    /// `mean_path`, else from the path recorded at training time.
    pub fn load(path: &Path, mean_path: Option<&Path>, task: Task) -> Result<Restorer> {
        let (net, state) = load_inference_net(path)?;
        let Some(state) = state else {
            bail!(
                "checkpoint {} has no training state: its task and method are unknown",
                path.display()
            );
        };
        let Role::Bridge(method) = state.settings.role else {
            bail!(
                "checkpoint {} is a mean network; restore needs a bridge checkpoint (nadb train)",
                path.display()
            );
        };
        if state.settings.task != task.name() {
            bail!(
                "checkpoint {} was trained for task {}, not {task}",
                path.display(),
                state.settings.task
            );
        }
        let mean = if method.uses_mean() {
            let recorded = state.settings.mean_checkpoint.clone();
            let Some(mp) = mean_path.map(Path::to_path_buf).or(recorded) else {
                bail!("method {method} needs its mean network: pass --mean-checkpoint");
            };
            Some(load_mean_net(&mp, task)?)
        } else {
            None
        };
        Ok(Restorer {
            task,
            method,
            bridge: state.settings.bridge()?,
            net,
            mean,
        })
    }

    pub fn bridge(&self) -> &Bridge {
        &self.bridge
    }

    /// Moves NADB's sampler threshold d (no effect on I2SB).
    pub fn set_threshold(&mut self, d: f64) {
        if let Bridge::Nadb(s) = &mut self.bridge {
            s.threshold = d;
        }
    }

    fn side_multiple(&self) -> usize {
        let m = self.net.config.side_multiple();
        self.mean
            .as_ref()
            .map_or(m, |mean| m.max(mean.config.side_multiple()))
    }

    /// Restores a batch of degraded images `[n, h, w, 3]` in [-1, 1] with
    /// `nfe` network evaluations; the sampler's noise comes from `seed`.
    pub fn restore(&self, degraded: &Tensor, nfe: usize, seed: u64) -> Result<Tensor> {
        let (_, h, w, _) = degraded.nhwc();
        let x1 = pad_reflect(degraded, self.side_multiple())?;
        let source = match &self.mean {
            Some(mean) => infer(mean, &x1, None),
            None => x1,
        };
        let out = sample(&self.bridge, &source, nfe, seed, |x, t| {
            infer(&self.net, x, Some(t))
        })?;
        Ok(crop(&out, h, w))
    }
}

/// The mean network alone: one forward pass (the paper's "mean" row).
pub fn mean_estimate(mean: &Unet, degraded: &Tensor) -> Result<Tensor> {
    let (_, h, w, _) = degraded.nhwc();
    let x1 = pad_reflect(degraded, mean.config.side_multiple())?;
    Ok(crop(&infer(mean, &x1, None), h, w))
}

//! Restoration: degraded images in, restored images out, through a trained
//! bridge (and the mean network where the method uses one).
//!
//! Any image size: images are padded by reflection to what the U-Net needs
//! and cropped back. The checkpoint says which task and method it was
//! trained for; asking it for another task is an error, not a silent wrong
//! answer.

use crate::bail;
use crate::bridge::sample::{sample, CapturedRestore, Seed};
use crate::bridge::{Bridge, Method};
use crate::cpu::pad::{crop, pad_reflect};
use crate::degrade::Task;
use crate::device::Device;
use crate::error::Result;
use crate::nn::{forward_peak_bytes, Unet};
use crate::tensor::Tensor;
use crate::train::{infer, load_inference_net, no_ot_ode, source_endpoint, Role};
use std::cell::RefCell;
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
    device: Device,
    /// On the GPU: the last restoration captured as a graph (replayed while
    /// the batch shape and NFE stay the same).
    captured: RefCell<Option<CapturedRestore>>,
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
            let recorded = state.settings.mean_checkpoint.as_deref();
            let recorded = recorded.map(|m| crate::weights::recorded_beside(m, path));
            let Some(mp) = mean_path.map(Path::to_path_buf).or(recorded) else {
                bail!("method {method} needs its mean network: pass --mean-checkpoint");
            };
            Some(load_mean_net(&mp, task)?)
        } else {
            None
        };
        Restorer::from_networks(task, method, state.settings.bridge()?, net, mean)
    }

    /// A restorer from networks in memory (benchmarks, tests).
    pub fn from_networks(
        task: Task,
        method: Method,
        bridge: Bridge,
        net: Unet,
        mean: Option<Unet>,
    ) -> Result<Restorer> {
        if method.uses_mean() != mean.is_some() {
            bail!(
                "method {method} {} a mean network",
                if method.uses_mean() {
                    "needs"
                } else {
                    "takes no"
                }
            );
        }
        Ok(Restorer {
            task,
            method,
            bridge,
            net,
            mean,
            device: Device::Cpu,
            captured: RefCell::new(None),
        })
    }

    /// Moves the networks to `device` (restorations then run there; inputs
    /// and outputs stay host tensors).
    pub fn to_device(mut self, device: Device) -> Result<Restorer> {
        self.net = self.net.on(device)?;
        self.mean = self.mean.map(|m| m.on(device)).transpose()?;
        self.device = device;
        *self.captured.get_mut() = None;
        Ok(self)
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Kernel launches in the captured graph a GPU restoration replays
    /// (None on the CPU, or before the first restoration).
    pub fn graph_kernels(&self) -> Option<u64> {
        self.captured
            .borrow()
            .as_ref()
            .map(CapturedRestore::kernels)
    }

    pub fn bridge(&self) -> &Bridge {
        &self.bridge
    }

    /// Samples I2SB as an OT-ODE or not, whatever it was trained with (the
    /// default is the checkpoint's mode); an error for a NADB bridge.
    pub fn set_ot_ode(&mut self, on: bool) -> Result<()> {
        let Bridge::I2sb(s) = &mut self.bridge else {
            return Err(no_ot_ode(self.method));
        };
        s.ot_ode = on;
        *self.captured.get_mut() = None; // the graph holds the old coefficients
        Ok(())
    }

    /// Whether the sampler is I2SB's OT-ODE.
    pub fn ot_ode(&self) -> bool {
        matches!(&self.bridge, Bridge::I2sb(s) if s.ot_ode)
    }

    /// Moves NADB's sampler threshold d (no effect on I2SB).
    pub fn set_threshold(&mut self, d: f64) {
        if let Bridge::Nadb(s) = &mut self.bridge {
            s.threshold = d;
            *self.captured.get_mut() = None; // the graph holds the old coefficients
        }
    }

    fn side_multiple(&self) -> usize {
        let m = self.net.config.side_multiple();
        self.mean
            .as_ref()
            .map_or(m, |mean| m.max(mean.config.side_multiple()))
    }

    /// Bytes a restore of `n` images of h x w holds at its peak: the larger
    /// network's activations (the two run one after the other) and the
    /// sampler's four image buffers.
    pub fn peak_bytes(&self, n: usize, h: usize, w: usize) -> u64 {
        let m = self.side_multiple();
        let (h, w) = (h.next_multiple_of(m), w.next_multiple_of(m));
        let nets = std::iter::once(&self.net).chain(self.mean.as_ref());
        let network = nets
            .map(|net| forward_peak_bytes(&net.config, n, h, w))
            .max()
            .unwrap_or(0);
        network + 16 * (n * h * w * 3) as u64
    }

    /// Restores a batch within `budget` bytes: whole when it fits, else
    /// image by image in overlapping tiles blended linearly. The budget
    /// covers the whole-image buffers of tiling (input, blended sum,
    /// weights) as well as each tile's network.
    pub fn restore_within(
        &self,
        degraded: &Tensor,
        nfe: usize,
        seed: u64,
        budget: u64,
    ) -> Result<Tensor> {
        self.restore_reporting(degraded, nfe, seed, budget, &mut |_| {})
    }

    /// `restore_within`, calling `progress` after each tile of a tiled
    /// restoration (for a progress line).
    pub fn restore_reporting(
        &self,
        degraded: &Tensor,
        nfe: usize,
        seed: u64,
        budget: u64,
        progress: &mut dyn FnMut(TileProgress),
    ) -> Result<Tensor> {
        let (n, h, w, c) = degraded.nhwc();
        if self.peak_bytes(n, h, w) <= budget {
            return self.restore(degraded, nfe, seed);
        }
        let whole_image_buffers = 4 * (2 * h * w * c + h * w) as u64;
        let tile = self.tile_side(budget.saturating_sub(whole_image_buffers), h, w)?;
        if n == 1 {
            return self.restore_tiled(degraded, nfe, seed, tile, &mut |t, m| {
                progress(TileProgress {
                    image: 0,
                    tile: t,
                    tiles: m,
                })
            });
        }
        let mut out = Vec::with_capacity(degraded.numel());
        for i in 0..n {
            let image = crop_batch_item(degraded, i);
            let mut report = |t, m| {
                progress(TileProgress {
                    image: i,
                    tile: t,
                    tiles: m,
                })
            };
            out.extend(
                self.restore_tiled(&image, nfe, seed, tile, &mut report)?
                    .into_vec(),
            );
        }
        Ok(Tensor::from_vec(degraded.shape(), out))
    }

    /// The largest square tile (a multiple of 64, at most 1024) whose
    /// restore fits in `left` bytes, for an h x w image.
    fn tile_side(&self, left: u64, h: usize, w: usize) -> Result<usize> {
        let fits = |s: usize| self.peak_bytes(1, s, s) <= left;
        match (1..=16).rev().map(|k| 64 * k).find(|&s| fits(s)) {
            Some(s) => Ok(s),
            None => bail!(
                "the memory budget is too small for a {w}x{h} image: its buffers and one 64x64 tile need {} MB",
                (4 * (7 * h * w) as u64 + self.peak_bytes(1, 64, 64)).div_ceil(1 << 20)
            ),
        }
    }

    /// One image in `tile`-sided tiles overlapping by tile/8; each output
    /// pixel is the average of its tiles weighted by linear ramps that fall
    /// to zero towards tile edges inside the image.
    /// `done(j, m)` follows tile j (from 1) of m.
    fn restore_tiled(
        &self,
        image: &Tensor,
        nfe: usize,
        seed: u64,
        tile: usize,
        done: &mut dyn FnMut(usize, usize),
    ) -> Result<Tensor> {
        let (_, h, w, c) = image.nhwc();
        let overlap = tile / 8;
        let starts = |len: usize| -> Vec<usize> {
            if len <= tile {
                return vec![0];
            }
            let mut v: Vec<usize> = (0..)
                .map(|k| k * (tile - overlap))
                .take_while(|&p| p + tile < len)
                .collect();
            v.push(len - tile);
            v
        };
        let ramp = |i: usize, len: usize, open_before: bool, open_after: bool| -> f32 {
            let rise = if open_before {
                (i + 1) as f32 / (overlap + 1) as f32
            } else {
                1.0
            };
            let fall = if open_after {
                (len - i) as f32 / (overlap + 1) as f32
            } else {
                1.0
            };
            rise.min(fall).min(1.0)
        };
        let (th, tw) = (tile.min(h), tile.min(w));
        let mut acc = vec![0.0f32; h * w * c];
        let mut weight = vec![0.0f32; h * w];
        let (ys, xs) = (starts(h), starts(w));
        let tiles = ys.len() * xs.len();
        for (row, &y0) in ys.iter().enumerate() {
            for (col, &x0) in xs.iter().enumerate() {
                let part = self.restore(&crop(image, y0, x0, th, tw), nfe, seed)?;
                for y in 0..th {
                    let wy = ramp(y, th, y0 > 0, y0 + th < h);
                    for x in 0..tw {
                        let k = wy * ramp(x, tw, x0 > 0, x0 + tw < w);
                        let (py, px) = (y0 + y, x0 + x);
                        weight[py * w + px] += k;
                        let src = &part.data()[(y * tw + x) * c..][..c];
                        for (a, v) in acc[(py * w + px) * c..][..c].iter_mut().zip(src) {
                            *a += k * v;
                        }
                    }
                }
                done(row * xs.len() + col + 1, tiles);
            }
        }
        for (px, &k) in acc.chunks_mut(c).zip(&weight) {
            px.iter_mut().for_each(|v| *v /= k);
        }
        Ok(Tensor::from_vec(&[1, h, w, c], acc))
    }

    /// Restores a batch of degraded images `[n, h, w, 3]` in [-1, 1] with
    /// `nfe` network evaluations; the sampler's noise comes from `seed`.
    pub fn restore(&self, degraded: &Tensor, nfe: usize, seed: u64) -> Result<Tensor> {
        let (_, h, w, _) = degraded.nhwc();
        let x1 = pad_reflect(degraded, self.side_multiple())?;
        let out = match self.device {
            Device::Cpu => self.run(&x1, nfe, Seed::Host(seed))?,
            Device::Cuda(dtype) => {
                let mut captured = self.captured.borrow_mut();
                if !captured.as_ref().is_some_and(|c| c.fits(x1.shape(), nfe)) {
                    *captured = None; // its buffers go back to the pool first
                    *captured = Some(CapturedRestore::capture(x1.shape(), dtype, nfe, |x, s| {
                        self.run(x, nfe, s)
                    })?);
                }
                captured.as_ref().expect("captured above").run(&x1, seed)?
            }
        };
        Ok(crop(&out, 0, 0, h, w))
    }

    /// The mean network (if any) and the sampling loop, on the backend
    /// that holds `x1`.
    fn run(&self, x1: &Tensor, nfe: usize, seed: Seed) -> Result<Tensor> {
        let source = source_endpoint(self.mean.as_ref(), x1);
        sample(&self.bridge, &source, nfe, seed, |x, t| {
            infer(&self.net, x, Some(t))
        })
    }
}

/// Where a tiled restoration is: tile `tile` (from 1) of `tiles` of image
/// `image` (from 0) of the batch is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileProgress {
    pub image: usize,
    pub tile: usize,
    pub tiles: usize,
}

/// Image `i` of a batch, as a batch of one.
fn crop_batch_item(batch: &Tensor, i: usize) -> Tensor {
    let (_, h, w, c) = batch.nhwc();
    let len = h * w * c;
    Tensor::from_vec(&[1, h, w, c], batch.data()[i * len..][..len].to_vec())
}

/// The mean network alone: one forward pass (the paper's "mean" row).
pub fn mean_estimate(mean: &Unet, degraded: &Tensor, device: Device) -> Result<Tensor> {
    let (_, h, w, _) = degraded.nhwc();
    let x1 = device.put(pad_reflect(degraded, mean.config.side_multiple())?)?;
    let e = source_endpoint(Some(mean), &x1).into_host()?;
    Ok(crop(&e, 0, 0, h, w))
}

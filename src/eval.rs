//! Evaluation in the shape of the paper's Tables 1 and 4: for each method
//! and NFE, PSNR and SSIM against the clean images, and seconds per image.
//!
//! Rows: `input` (the degraded image itself), `mean` (the mean network, one
//! call), and any bridge method at each NFE (NADB methods once per
//! threshold d when a sweep is asked for; I2SB methods with the sampler
//! their checkpoint was trained with, OT-ODE or not, unless told otherwise,
//! and the table says which). With `spread`, every bridge row also draws
//! a second sample (seed + 1) and reports the PSNR between the two: for a
//! sampler that draws from the posterior, the squared error of one sample
//! is the error of the samples' mean plus half the squared distance between
//! two samples, so the column says how much of a row's error is the
//! sampler's own noise. Images are the center crops of
//! every image under the data folder (a full-resolution photograph takes
//! minutes per NFE on a CPU).

use crate::bail;
use crate::bridge::{Bridge, Method};
use crate::data::image_files;
use crate::degrade::{degrade, Task};
use crate::device::Device;
use crate::error::Result;
use crate::imageio::{read_rgb, rgb_to_tensor};
use crate::metrics::{psnr, ssim};
use crate::restore::{load_mean_net, mean_estimate, Restorer};
use crate::tensor::Tensor;
use image::imageops;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One line of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub method: String,
    pub nfe: Option<usize>,
    pub threshold: Option<f64>,
    /// An I2SB row sampled as an OT-ODE.
    pub ot_ode: bool,
    pub psnr: f64,
    pub ssim: f64,
    pub seconds_per_image: f64,
    /// PSNR between two samples (seeds `seed` and `seed + 1`), when asked.
    pub spread_psnr: Option<f64>,
}

pub struct EvalPlan {
    pub task: Task,
    /// `input`, `mean`, or method names.
    pub rows: Vec<String>,
    pub nfes: Vec<usize>,
    /// NADB thresholds to sweep; empty for each checkpoint's own.
    pub thresholds: Vec<f64>,
    /// I2SB as an OT-ODE or not; None for each checkpoint's own mode.
    pub ot_ode: Option<bool>,
    /// Bridge checkpoint per method.
    pub checkpoints: Vec<(Method, PathBuf)>,
    pub mean_checkpoint: Option<PathBuf>,
    pub crop: usize,
    pub seed: u64,
    /// Draw a second sample per bridge row and report the spread.
    pub spread: bool,
    pub device: Device,
}

/// Center crops of every image under `dir`, `[1, crop, crop, 3]` each.
pub fn load_eval_images(dir: &Path, crop: usize) -> Result<Vec<(PathBuf, Tensor)>> {
    let files = image_files(dir)?;
    let mut out = Vec::new();
    for path in files {
        let mut img = read_rgb(&path)?;
        let (w, h) = img.dimensions();
        let side = crop as u32;
        if w < side || h < side {
            bail!(
                "{}: {w}x{h} is smaller than the {crop}x{crop} evaluation crop",
                path.display()
            );
        }
        let cropped =
            imageops::crop(&mut img, (w - side) / 2, (h - side) / 2, side, side).to_image();
        out.push((path, rgb_to_tensor(&cropped)));
    }
    if out.is_empty() {
        bail!("{}: no PNG or JPEG images to evaluate on", dir.display());
    }
    Ok(out)
}

fn mean_of(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// A row's scores: mean PSNR and SSIM, seconds per image (of the first
/// sample), and the mean PSNR between two samples when asked for.
struct Scores {
    psnr: f64,
    ssim: f64,
    seconds: f64,
    spread_psnr: Option<f64>,
}

/// Scores `restore(degraded, seed offset)` over the images; with `spread`,
/// also restores each image with seed offset 1 and compares the two.
fn score(
    images: &[(PathBuf, Tensor, Tensor)],
    spread: bool,
    mut restore: impl FnMut(&Tensor, u64) -> Result<Tensor>,
) -> Result<Scores> {
    let (mut p, mut s, mut between) = (Vec::new(), Vec::new(), Vec::new());
    let mut seconds = 0.0;
    for (_, clean, degraded) in images {
        let start = Instant::now();
        let out = restore(degraded, 0)?;
        seconds += start.elapsed().as_secs_f64();
        p.extend(psnr(&out, clean));
        s.extend(ssim(&out, clean));
        if spread {
            between.extend(psnr(&restore(degraded, 1)?, &out));
        }
    }
    Ok(Scores {
        psnr: mean_of(&p),
        ssim: mean_of(&s),
        seconds: seconds / images.len() as f64,
        spread_psnr: spread.then(|| mean_of(&between)),
    })
}

impl EvalPlan {
    /// Refuses rows, NFEs and flags that do not fit together, before any
    /// work: an unknown row, an NFE out of a method's range, `--ot-ode`
    /// without an i2sb row.
    pub fn check(&self) -> Result<()> {
        let mut i2sb_rows = false;
        for row in self
            .rows
            .iter()
            .filter(|r| !matches!(r.as_str(), "input" | "mean"))
        {
            let method: Method = row.parse()?;
            for &nfe in &self.nfes {
                method.check_nfe(nfe)?;
            }
            i2sb_rows |= !method.is_nadb();
        }
        if self.ot_ode.is_some() && !i2sb_rows {
            bail!("--ot-ode applies to the i2sb methods only, and no i2sb row was asked for (--methods)");
        }
        Ok(())
    }
}

/// The table's rows and the number of images they average over.
pub fn evaluate(data: &Path, plan: &EvalPlan) -> Result<(Vec<Row>, usize)> {
    plan.check()?;
    let images: Vec<(PathBuf, Tensor, Tensor)> = load_eval_images(data, plan.crop)?
        .into_iter()
        .map(|(p, clean)| degrade(plan.task, &clean).map(|d| (p, clean, d)))
        .collect::<Result<_>>()?;
    let mut rows = Vec::new();
    let row = |method: &str, nfe, threshold, ot_ode, scores: Scores| Row {
        method: method.to_string(),
        nfe,
        threshold,
        ot_ode,
        psnr: scores.psnr,
        ssim: scores.ssim,
        seconds_per_image: scores.seconds,
        spread_psnr: scores.spread_psnr,
    };
    for name in &plan.rows {
        match name.as_str() {
            "input" => rows.push(row(
                "input",
                None,
                None,
                false,
                score(&images, false, |d, _| Ok(d.clone()))?,
            )),
            "mean" => {
                let Some(path) = &plan.mean_checkpoint else {
                    bail!("the 'mean' row needs --mean-checkpoint");
                };
                let mean = load_mean_net(path, plan.task)?.on(plan.device)?;
                rows.push(row(
                    "mean",
                    Some(1),
                    None,
                    false,
                    score(&images, false, |d, _| mean_estimate(&mean, d, plan.device))?,
                ));
            }
            other => {
                let method: Method = other.parse()?;
                let Some((_, path)) = plan.checkpoints.iter().find(|(m, _)| *m == method) else {
                    bail!("no checkpoint for method {method}: pass --checkpoint {method}=PATH");
                };
                let mut restorer =
                    Restorer::load(path, plan.mean_checkpoint.as_deref(), plan.task)?
                        .to_device(plan.device)?;
                if restorer.method != method {
                    bail!(
                        "checkpoint {} is a {} network, not {method}",
                        path.display(),
                        restorer.method
                    );
                }
                if let (Some(on), false) = (plan.ot_ode, method.is_nadb()) {
                    restorer.set_ot_ode(on)?;
                }
                let sweep: Vec<Option<f64>> = match restorer.bridge() {
                    Bridge::Nadb(_) if !plan.thresholds.is_empty() => {
                        plan.thresholds.iter().map(|&d| Some(d)).collect()
                    }
                    _ => vec![None],
                };
                for threshold in sweep {
                    if let Some(d) = threshold {
                        restorer.set_threshold(d);
                    }
                    let shown = threshold.or(match restorer.bridge() {
                        Bridge::Nadb(s) => Some(s.threshold),
                        Bridge::I2sb(_) => None,
                    });
                    for &nfe in &plan.nfes {
                        let result = score(&images, plan.spread, |d, offset| {
                            restorer.restore(d, nfe, plan.seed + offset)
                        })?;
                        rows.push(row(other, Some(nfe), shown, restorer.ot_ode(), result));
                    }
                }
            }
        }
    }
    Ok((rows, images.len()))
}

pub fn markdown(task: Task, images: usize, rows: &[Row]) -> String {
    let spread = rows.iter().any(|r| r.spread_psnr.is_some());
    let (head, rule) = if spread {
        (" spread (dB) |", " --- |")
    } else {
        ("", "")
    };
    let mut s = format!(
        "Task {task}, {images} images\n\n| method | NFE | d | PSNR (dB) | SSIM | s / image |{head}\n| --- | --- | --- | --- | --- | --- |{rule}\n"
    );
    for r in rows {
        let nfe = r.nfe.map_or("-".to_string(), |n| n.to_string());
        let d = r.threshold.map_or("-".to_string(), |d| format!("{d:.3}"));
        let sampler = if r.ot_ode { " (OT-ODE)" } else { "" };
        let between = match (spread, r.spread_psnr) {
            (false, _) => String::new(),
            (true, None) => " - |".to_string(),
            (true, Some(p)) => format!(" {p:.2} |"),
        };
        s += &format!(
            "| {}{sampler} | {nfe} | {d} | {:.2} | {:.4} | {:.3} |{between}\n",
            r.method, r.psnr, r.ssim, r.seconds_per_image
        );
    }
    s
}

pub fn csv(task: Task, rows: &[Row]) -> String {
    let mut s =
        "task,method,nfe,threshold,psnr,ssim,seconds_per_image,ot_ode,spread_psnr\n".to_string();
    for r in rows {
        s += &format!(
            "{task},{},{},{},{:.4},{:.5},{:.4},{},{}\n",
            r.method,
            r.nfe.map_or(String::new(), |n| n.to_string()),
            r.threshold.map_or(String::new(), |d| d.to_string()),
            r.psnr,
            r.ssim,
            r.seconds_per_image,
            r.ot_ode,
            r.spread_psnr.map_or(String::new(), |p| format!("{p:.4}"))
        );
    }
    s
}

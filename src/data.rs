//! Training data: every PNG/JPEG under a folder (recursively), decoded once,
//! served as random crops with horizontal flips, degraded on a background
//! thread so that the trainer never waits on decoding or degradation.
//!
//! A batch is a pure function of (seed, step): crop positions and flips
//! come from Philox stream `TrainData(step)`, so a resumed run sees exactly
//! the batches the uninterrupted one would have.

use crate::bail;
use crate::degrade::{degrade, Task};
use crate::error::{Error, Result};
use crate::imageio::{is_image_path, read_rgb, unit_from_u8};
use crate::rng::{uniform_u32, Stream};
use crate::tensor::Tensor;
use image::RgbImage;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Every image file under `dir`, sorted, recursively.
pub fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| Error(format!("{}: cannot list: {e}", dir.display())))?;
        for entry in entries {
            let path = entry
                .map_err(|e| Error(format!("{}: cannot list: {e}", dir.display())))?
                .path();
            if path.is_dir() {
                walk(&path, out)?;
            } else if is_image_path(&path) {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    files.sort();
    Ok(files)
}

pub struct Dataset {
    pub images: Vec<(PathBuf, RgbImage)>,
    pub crop: usize,
}

impl Dataset {
    /// Decodes every image under `dir`. Unreadable files and images smaller
    /// than the crop are skipped with a warning naming them; it is an error
    /// only if nothing usable is left.
    pub fn open(dir: &Path, crop: usize) -> Result<Dataset> {
        let files = image_files(dir)?;
        if files.is_empty() {
            bail!(
                "{}: no PNG or JPEG images in this folder or below it",
                dir.display()
            );
        }
        let decoded: Vec<_> = files.par_iter().map(|p| (p.clone(), read_rgb(p))).collect();
        let mut images = Vec::new();
        for (path, img) in decoded {
            match img {
                Err(e) => eprintln!("warning: skipping {e}"),
                Ok(img) if (img.width() as usize) < crop || (img.height() as usize) < crop => {
                    eprintln!(
                        "warning: skipping {}: {}x{} is smaller than the {crop}x{crop} crop",
                        path.display(),
                        img.width(),
                        img.height()
                    )
                }
                Ok(img) => images.push((path, img)),
            }
        }
        if images.is_empty() {
            bail!(
                "{}: none of its {} image files is readable and at least {crop}x{crop}",
                dir.display(),
                files.len()
            );
        }
        Ok(Dataset { images, crop })
    }

    /// The clean crops of training step `step`: `[batch, crop, crop, 3]`.
    pub fn batch(&self, batch: usize, seed: u64, step: u64) -> Tensor {
        let c = self.crop;
        let mut out = Vec::with_capacity(batch * c * c * 3);
        for b in 0..batch as u64 {
            let word = |k: u64| uniform_u32(seed, Stream::TrainData(step), 4 * b + k) as usize;
            let (_, img) = &self.images[word(0) % self.images.len()];
            let (w, h) = (img.width() as usize, img.height() as usize);
            let (y0, x0) = (word(1) % (h - c + 1), word(2) % (w - c + 1));
            let flip = word(3) % 2 == 1;
            let raw = img.as_raw();
            for y in y0..y0 + c {
                for i in 0..c {
                    let x = if flip { x0 + c - 1 - i } else { x0 + i };
                    let px = &raw[(y * w + x) * 3..][..3];
                    out.extend(px.iter().copied().map(unit_from_u8));
                }
            }
        }
        Tensor::from_vec(&[batch, c, c, 3], out)
    }
}

/// A clean batch and its degraded twin.
pub struct Batch {
    pub step: u64,
    pub clean: Tensor,
    pub degraded: Tensor,
}

/// Produces the batches of steps `first..last` on a background thread, two
/// ahead of the trainer.
pub struct Loader {
    rx: Receiver<Result<Batch>>,
    _worker: JoinHandle<()>,
}

impl Loader {
    pub fn spawn(
        data: Arc<Dataset>,
        task: Task,
        batch: usize,
        seed: u64,
        first: u64,
        last: u64,
    ) -> Loader {
        let (tx, rx) = sync_channel(2);
        let worker = std::thread::spawn(move || {
            for step in first..last {
                let clean = data.batch(batch, seed, step);
                let made = degrade(task, &clean).map(|degraded| Batch {
                    step,
                    clean,
                    degraded,
                });
                if tx.send(made).is_err() {
                    return; // the trainer stopped
                }
            }
        });
        Loader {
            rx,
            _worker: worker,
        }
    }

    pub fn next(&self) -> Result<Batch> {
        self.rx
            .recv()
            .map_err(|_| Error("the data loader stopped early".to_string()))?
    }
}

//! The endpoint diagnosis of spec section 1: how well a trained bridge
//! network's prediction p matches its training label y, per time t, on a
//! held-out batch. Magnitude: `Var(p) / Var(y)`; direction: cosine
//! similarity `<p, y> / (|p| |y|)` (both 1.0 when right). NADB's claim is
//! that I2SB's network falls far below 1 as t -> 0 and NADB's does not.

use crate::data::Dataset;
use crate::degrade::Task;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::ops;
use crate::restore::Restorer;
use crate::rng::Stream;
use crate::train::{infer, source_endpoint};
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// Times probed: dense near the endpoint t = 0 where the methods differ.
pub fn probe_times() -> Vec<f64> {
    let mut t = vec![0.001, 0.002, 0.005, 0.01, 0.02];
    t.extend((1..=20).map(|k| k as f64 * 0.05));
    t
}

#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub method: String,
    pub t: f64,
    pub variance_ratio: f64,
    pub cosine: f64,
}

fn variance(v: &[f32]) -> f64 {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-30)
}

/// What `diagnose` measures: checkpoints, on `batch` crops of side `crop`
/// drawn with `seed`.
pub struct DiagnosePlan {
    pub task: Task,
    pub checkpoints: Vec<PathBuf>,
    pub mean_checkpoint: Option<PathBuf>,
    pub batch: usize,
    pub crop: usize,
    pub seed: u64,
    pub device: Device,
}

/// Measures each checkpoint on the same held-out batch (crops of the
/// images under `data`, degraded by `task`).
pub fn diagnose(data: &Path, plan: &DiagnosePlan) -> Result<Vec<Point>> {
    let DiagnosePlan {
        task,
        batch,
        crop,
        seed,
        device,
        ..
    } = *plan;
    let set = Dataset::open(data, crop)?;
    let clean = set.batch(batch, seed, 0);
    let degraded = device.put(crate::degrade::degrade(task, &clean)?)?;
    let clean = device.put(clean)?;
    let mut points = Vec::new();
    for path in &plan.checkpoints {
        let probe =
            Restorer::load(path, plan.mean_checkpoint.as_deref(), task)?.to_device(device)?;
        let source = source_endpoint(probe.mean.as_ref(), &degraded);
        for (i, &t) in probe_times().iter().enumerate() {
            let c = probe.bridge.coeffs_at(t);
            let pairs = vec![(c.xt, c.target); batch];
            let (xt, label) = ops::training_pair(
                &clean,
                &source,
                &pairs,
                seed,
                Stream::TrainNoise(u64::MAX - i as u64),
            );
            let pred = infer(&probe.net, &xt, Some(c.time_input)).into_host()?;
            let label = label.into_host()?;
            points.push(Point {
                method: probe.method.name().to_string(),
                t,
                variance_ratio: variance(pred.data()) / variance(label.data()).max(1e-30),
                cosine: cosine(pred.data(), label.data()),
            });
        }
    }
    Ok(points)
}

pub fn csv(points: &[Point]) -> String {
    let mut s = "method,t,variance_ratio,cosine\n".to_string();
    for p in points {
        s += &format!(
            "{},{},{:.6},{:.6}\n",
            p.method, p.t, p.variance_ratio, p.cosine
        );
    }
    s
}

/// What a panel plots of each point.
type PanelValue = fn(&Point) -> f64;

static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// Two panels (variance ratio, cosine) against t, one line per method;
/// an existing `path` is replaced only if `replace`.
pub fn plot(points: &[Point], path: &Path, replace: bool) -> Result<()> {
    let fail =
        |e: &dyn std::fmt::Display| Error(format!("{}: cannot draw the plot: {e}", path.display()));
    // Registering twice is harmless; the font is part of the binary.
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    let tmp = path.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&tmp, (1200, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let panels = root.split_evenly((1, 2));
        let mut methods: Vec<&str> = points.iter().map(|p| p.method.as_str()).collect();
        methods.dedup();
        let palette = [RED, BLUE, GREEN, MAGENTA];
        let panel_specs: [(&str, PanelValue); 2] = [
            ("variance ratio Var(p) / Var(y)", |p| p.variance_ratio),
            ("cosine similarity <p, y> / (|p| |y|)", |p| p.cosine),
        ];
        for (area, (title, value)) in panels.iter().zip(panel_specs) {
            let top = points.iter().map(value).fold(1.05f64, f64::max);
            let bottom = points.iter().map(value).fold(0.0f64, f64::min);
            let mut chart = ChartBuilder::on(area)
                .caption(title, ("sans-serif", 22))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(55)
                .build_cartesian_2d(0f64..1f64, bottom..top)
                .map_err(|e| fail(&e))?;
            chart
                .configure_mesh()
                .x_desc("t (0 = clean endpoint)")
                .y_desc(title.split(' ').next().unwrap_or(title))
                .draw()
                .map_err(|e| fail(&e))?;
            for (m, color) in methods.iter().zip(palette.iter().cycle()) {
                let series: Vec<(f64, f64)> = points
                    .iter()
                    .filter(|p| p.method == *m)
                    .map(|p| (p.t, value(p)))
                    .collect();
                chart
                    .draw_series(LineSeries::new(series.clone(), color.stroke_width(2)))
                    .map_err(|e| fail(&e))?
                    .label(*m)
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(
                        series
                            .into_iter()
                            .map(|xy| Circle::new(xy, 3, color.filled())),
                    )
                    .map_err(|e| fail(&e))?;
            }
            chart
                .draw_series(LineSeries::new([(0.0, 1.0), (1.0, 1.0)], BLACK.mix(0.3)))
                .map_err(|e| fail(&e))?;
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| fail(&e))?;
        }
        root.present().map_err(|e| fail(&e))?;
    }
    crate::atomic::move_into(&tmp, path, replace)
}

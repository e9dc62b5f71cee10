//! The `nadb` command line.

// Large blocks are reused instead of going back to the kernel (see
// host_alloc.rs: first-touch page faults were a tenth of a CPU restoration).
#[global_allocator]
static ALLOCATOR: nadb::host_alloc::RecyclingAllocator =
    nadb::host_alloc::RecyclingAllocator::new();

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use nadb::atomic::write_file;
use nadb::bridge::Method;
use nadb::checkpoint::{self, Checkpoint, ADAM_M_PREFIX, ADAM_V_PREFIX, EMA_PREFIX};
use nadb::data::Dataset;
use nadb::degrade::{degrade, Task, TASK_NAMES};
use nadb::device::{Device, DeviceChoice, Precision};
use nadb::diagnose;
use nadb::eval::{self, evaluate, EvalPlan};
use nadb::imageio::{load_picture, save_output, Layout, Picture};
use nadb::nn::{forward_flops, param_count, param_specs, UnetConfig, CONFIG_NAMES};
use nadb::restore::{Restorer, TileProgress};
use nadb::train::{Role, RunSettings, Trainer};
use nadb::{bail, Error, Result, Tensor};
use std::cell::Cell;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "nadb",
    version,
    about = "Noise-Aligned Diffusion Bridge image restoration: train and run NADB and I2SB"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Where networks run: the GPU when one is present (auto), the CPU, or
    /// the GPU (an error without one). Degrading images is CPU work.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    device: DeviceChoice,
    /// On the GPU: storage type of activations and working weights
    /// (default bf16; f32 for tight comparison with the CPU). On the CPU:
    /// f32 (default), or bf16 to round the operands of every matrix product
    /// (convolution, linear, attention) to bf16 and sum in f32, on CPUs
    /// with AVX512-BF16.
    #[arg(long, global = true, value_enum)]
    precision: Option<Precision>,
}

#[derive(Subcommand)]
enum Command {
    /// Print a network's configuration, parameter count and forward FLOPs.
    Info(InfoArgs),
    /// Degrade clean images with one of the tasks (the paper's six and the
    /// separable blurs).
    Degrade(DegradeArgs),
    /// Train the mean network M(X1) ~ E[X0 | X1] for a task.
    TrainMean(TrainArgs),
    /// Train a bridge network (nadb, nadb-nomean, i2sb, i2sb-mean).
    Train(BridgeTrainArgs),
    /// Restore degraded images with a trained bridge.
    Restore(RestoreArgs),
    /// PSNR / SSIM / time table of methods and NFEs on held-out images.
    Eval(EvalArgs),
    /// Variance ratio and cosine of prediction vs label against t (CSV + PNG).
    Diagnose(DiagnoseArgs),
    /// Run a network once on tensors from a safetensors file (x: [n, h, w,
    /// 3], t: [n] time inputs for a bridge) and write its output y: for
    /// profiling and for comparing with other implementations.
    Forward(ForwardArgs),
    /// Write a checkpoint's EMA weights alone, as bf16 (the shipped form).
    Export(ExportArgs),
    /// Restoration latency and throughput and training images/s on the
    /// selected device, with random weights of a configuration.
    Bench(BenchArgs),
}

#[derive(Args)]
struct ForwardArgs {
    /// The network (its EMA weights when it has them, as restore uses).
    #[arg(long)]
    checkpoint: PathBuf,
    /// safetensors with "x" (f32 [n, h, w, 3], sides a multiple of the
    /// network's) and, for a bridge, "t" (f32 [n]).
    #[arg(long)]
    input: PathBuf,
    /// Where to write "y" (f32 [n, h, w, 3]).
    #[arg(short, long)]
    out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct ExportArgs {
    /// A training checkpoint (nadb train / train-mean).
    checkpoint: PathBuf,
    #[arg(short, long)]
    out: PathBuf,
    /// The mean network's path to record in a bridge's file.
    #[arg(long)]
    mean_checkpoint: Option<PathBuf>,
    /// Replace --out if it exists.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct BenchArgs {
    #[arg(long, default_value = "base")]
    config: String,
    /// The task whose defaults the bridge takes (I2SB's beta_max, OT-ODE).
    #[arg(long, default_value = "jpeg10")]
    task: String,
    /// The method restored (nadb, nadb-nomean, i2sb, i2sb-mean); training
    /// is timed for its family without the mean network.
    #[arg(long, default_value = "nadb")]
    method: String,
    /// I2SB as an OT-ODE: the reference's `--ot-ode`, no noise in the
    /// interpolant nor in the posterior (i2sb methods only; --ot-ode=false
    /// turns it off). [default: the task's, as for train]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    ot_ode: Option<bool>,

    /// Side of the restored images.
    #[arg(long, default_value_t = 256)]
    size: usize,
    #[arg(long, value_delimiter = ',', default_value = "5,10")]
    nfe: Vec<usize>,
    /// Batch of the throughput run (1: skip it).
    #[arg(long, default_value_t = 16)]
    batch: usize,
    #[arg(long, default_value_t = 64)]
    train_batch: usize,
    #[arg(long, default_value_t = 64)]
    train_size: usize,
    /// Timed runs per figure (the median is reported), after one warm-up.
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Also write the table here.
    #[arg(short, long)]
    out: Option<PathBuf>,
    /// Instead of the figures: one restoration (batch 1, the first NFE)
    /// and one training step, each after a warm-up, as a per-op table
    /// (calls, time, share, GFLOP/s, GB/s per op and shape).
    #[arg(long)]
    profile: bool,
    /// With --profile: also write the ops as a Chrome trace (JSON, one
    /// span per op; opens in Perfetto). An existing file is not replaced.
    #[arg(long, value_name = "FILE", requires = "profile")]
    trace: Option<PathBuf>,
    /// Replace --out and --trace if they exist.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct DiagnoseArgs {
    /// Folder of held-out clean images.
    #[arg(long)]
    data: PathBuf,
    #[arg(long)]
    task: String,
    /// Bridge checkpoints to compare (e.g. a NADB one and an I2SB one).
    #[arg(long, required = true)]
    checkpoint: Vec<PathBuf>,
    /// The mean network [default: the one recorded at training].
    #[arg(long)]
    mean_checkpoint: Option<PathBuf>,
    /// Held-out crops per time.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[arg(long, default_value_t = 64)]
    crop: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Writes OUT.csv and OUT.png.
    #[arg(short, long)]
    out: PathBuf,
    /// Replace OUT.csv and OUT.png if they exist.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct InfoArgs {
    /// A checkpoint file or a config name (tiny, small, base, adm256).
    target: Option<String>,
    /// A named config (instead of TARGET).
    #[arg(long)]
    config: Option<String>,
    /// The mean network's variant of the config (no time input).
    #[arg(long)]
    mean: bool,
    /// Image side for the FLOP count.
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Batch for the FLOP count.
    #[arg(long, default_value_t = 1)]
    batch: usize,
}

#[derive(Args)]
struct DegradeArgs {
    /// Clean images (PNG or JPEG).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Output folder (created if missing).
    #[arg(short, long)]
    out: PathBuf,
    #[arg(long)]
    task: String,
    /// Also write each degraded image unrounded, as NAME.safetensors with
    /// the f32 tensor "x" [1, h, w, 3] in [-1, 1] (the input format of
    /// `nadb forward`): for comparing with other implementations.
    #[arg(long)]
    tensors: bool,
    /// Replace outputs that already exist (inputs are never replaced).
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct TrainArgs {
    /// Folder of training images (PNG/JPEG, searched recursively).
    #[arg(long)]
    data: PathBuf,
    #[arg(long)]
    task: String,
    /// Checkpoint to write (and to continue with --resume).
    #[arg(short, long)]
    out: PathBuf,
    /// Continue the run saved in --out.
    #[arg(long)]
    resume: bool,
    /// Network configuration (tiny, small, base, adm256).
    #[arg(long, default_value = "small")]
    config: String,
    /// Total optimiser steps (a resumed run continues up to this).
    #[arg(long, default_value_t = 1000)]
    steps: u64,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Side of the random training crops.
    #[arg(long, default_value_t = 64)]
    crop: usize,
    #[arg(long, default_value_t = 1e-4)]
    lr: f32,
    /// Linear learning-rate warm-up steps.
    #[arg(long, default_value_t = 500)]
    warmup: u64,
    /// After the warm-up: `constant`, or `cosine` (a half cosine from --lr
    /// down to zero at --steps, so a resume must keep --steps).
    #[arg(long, default_value = "constant")]
    lr_schedule: String,
    #[arg(long, default_value_t = 0.999)]
    ema: f32,
    /// Global gradient-norm clip.
    #[arg(long, default_value_t = 1.0)]
    clip: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write a checkpoint every this many steps (and at the end).
    #[arg(long, default_value_t = 200)]
    save_every: u64,
    /// Log one line every this many steps when stderr is not a terminal.
    #[arg(long, default_value_t = 10)]
    log_every: u64,
    /// Stop after this many minutes of training (saving first).
    #[arg(long)]
    minutes: Option<f64>,
    /// Check every op's output and gradient for NaN and infinity.
    #[arg(long)]
    detect_anomaly: bool,
    /// Start from this network's weights (a checkpoint or an exported
    /// network; its EMA weights where it has them) instead of random ones:
    /// a fine-tune with a fresh optimiser and a fresh step count.
    #[arg(long)]
    init: Option<PathBuf>,
}

#[derive(Args)]
struct BridgeTrainArgs {
    #[command(flatten)]
    common: TrainArgs,
    #[arg(long, default_value = "nadb")]
    method: String,
    /// The trained mean network (for nadb and i2sb-mean).
    #[arg(long)]
    mean_checkpoint: Option<PathBuf>,
    /// I2SB as an OT-ODE: the reference's `--ot-ode`, no noise in the
    /// interpolant nor in the posterior (i2sb methods only; --ot-ode=false
    /// turns it off). [default: on for blur-uniform and
    /// blur-gauss, as the reference trains them; off otherwise]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    ot_ode: Option<bool>,
}

#[derive(Args)]
struct RestoreArgs {
    /// Degraded images (PNG or JPEG).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Output folder (created if missing) [default: each result is written
    /// next to its input, as NAME-restored.png].
    #[arg(short, long)]
    out: Option<PathBuf>,
    #[arg(long)]
    task: String,
    /// Network evaluations per image.
    #[arg(long, default_value_t = 10)]
    nfe: usize,
    /// Bridge checkpoint [default: the shipped TASK-nadb.safetensors, looked
    /// for in ./weights, $NADB_WEIGHTS, weights/ beside the executable and
    /// in the crate's folder].
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Mean network checkpoint [default: the one recorded at training].
    #[arg(long)]
    mean_checkpoint: Option<PathBuf>,
    /// Images of the same size restored together.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Output format: png or jpg.
    #[arg(long, default_value = "png")]
    format: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Replace outputs that already exist (inputs are never replaced).
    #[arg(long)]
    force: bool,
    /// Memory budget in MB: larger images are restored in overlapping tiles.
    #[arg(long, default_value_t = 4096)]
    max_memory: u64,
    /// Restore each batch twice (a warm-up, which on the GPU captures the
    /// sampling graph, then the measured run) and print times and the
    /// kernel and graph launches of the measured run.
    #[arg(long)]
    profile: bool,
    /// I2SB as an OT-ODE: the reference's `--ot-ode`, no noise in the
    /// interpolant nor in the posterior (i2sb methods only; --ot-ode=false
    /// turns it off). [default: the mode the checkpoint was
    /// trained with]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    ot_ode: Option<bool>,
}

#[derive(Args)]
struct EvalArgs {
    /// Folder of clean held-out images.
    #[arg(long)]
    data: PathBuf,
    #[arg(long)]
    task: String,
    /// Rows: input, mean and method names, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "input,mean,i2sb,nadb")]
    methods: Vec<String>,
    #[arg(long, value_delimiter = ',', default_value = "5,10")]
    nfe: Vec<usize>,
    /// NADB sampler thresholds d to sweep (default: each checkpoint's own).
    #[arg(long, value_delimiter = ',')]
    threshold: Vec<f64>,
    /// METHOD=PATH for each bridge method [default: weights/TASK-METHOD.safetensors].
    #[arg(long)]
    checkpoint: Vec<String>,
    /// The mean network [default: weights/TASK-mean.safetensors].
    #[arg(long)]
    mean_checkpoint: Option<PathBuf>,
    /// Side of the center crop evaluated from each image.
    #[arg(long, default_value_t = 128)]
    crop: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write the table as CSV here.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// I2SB as an OT-ODE: the reference's `--ot-ode`, no noise in the
    /// interpolant nor in the posterior (i2sb methods only; --ot-ode=false
    /// turns it off). [default: the mode each checkpoint was
    /// trained with]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    ot_ode: Option<bool>,
    /// Also draw a second sample (seed + 1) for every bridge row and report
    /// the PSNR between the two samples: how much of the error is the
    /// sampler's noise (doubles the bridge rows' time).
    #[arg(long)]
    spread: bool,
    /// Replace --csv if it exists.
    #[arg(long)]
    force: bool,
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn info(args: InfoArgs) -> Result<()> {
    let InfoArgs {
        target,
        config,
        mean,
        size,
        batch,
    } = args;
    let (cfg, ckpt) = match (target, config) {
        (Some(_), Some(_)) => bail!("give either a checkpoint/config name or --config, not both"),
        (None, None) => bail!(
            "give a checkpoint file or --config NAME ({})",
            CONFIG_NAMES.join(", ")
        ),
        (None, Some(name)) => (UnetConfig::named(&name)?, None),
        (Some(t), None) if Path::new(&t).exists() => {
            let c = Checkpoint::open(Path::new(&t))?;
            (c.config.clone(), Some(c))
        }
        (Some(t), None) => match UnetConfig::named(&t) {
            Ok(c) => (c, None),
            Err(_) => bail!(
                "{t}: no such checkpoint file, and not a config name ({})",
                CONFIG_NAMES.join(", ")
            ),
        },
    };
    // Every tensor is read (present, shaped, finite) before anything is said.
    let mut groups = vec!["weights"];
    if let Some(c) = &ckpt {
        let specs = param_specs(&c.config)?;
        c.check_group("", &specs)?;
        for (prefix, label) in [
            (EMA_PREFIX, "ema"),
            (ADAM_M_PREFIX, "adam_m"),
            (ADAM_V_PREFIX, "adam_v"),
        ] {
            if c.has_group(prefix, &specs)? {
                c.check_group(prefix, &specs)?;
                groups.push(label);
            }
        }
    }
    let cfg = if mean { cfg.without_time() } else { cfg };
    let m = cfg.side_multiple();
    if size == 0 || !size.is_multiple_of(m) || batch == 0 {
        bail!("--size must be a positive multiple of {m} and --batch positive");
    }
    let attn: Vec<String> = cfg.attention_ds.iter().map(|d| format!("1/{d}")).collect();
    println!(
        "config        {} ({})",
        cfg.name,
        if cfg.time_input {
            "bridge network, time input"
        } else {
            "mean network, no time input"
        }
    );
    println!(
        "architecture  base channels {}, mults {:?}, {} res blocks per level, attention at {}, head channels {}, {} groups, scale-shift norm {}, resblock up/down {}",
        cfg.base_channels,
        cfg.channel_mult,
        cfg.res_blocks,
        attn.join(", "),
        cfg.head_channels,
        cfg.groups,
        cfg.scale_shift_norm,
        cfg.resblock_updown
    );
    println!("parameters    {}", thousands(param_count(&cfg)? as u64));
    let flops = forward_flops(&cfg, batch, size, size)?;
    println!(
        "forward       {:.2} GFLOP at batch {batch}, {size}x{size} (convolutions, linear layers and attention products; 2 per multiply-add)",
        flops as f64 / 1e9
    );
    if let Some(c) = ckpt {
        println!(
            "tensors       {} (all present, shapes checked, every value finite)",
            groups.join(", ")
        );
        println!(
            "training      {}",
            c.training.as_deref().unwrap_or("none (weights only)")
        );
    }
    Ok(())
}

/// The output path of each input: `out_dir/STEM.EXT`, else
/// `STEM-restored.EXT` beside the input, EXT being `ext` or (None) the
/// input's own. Two inputs that would be written to one file are refused
/// here, before any work.
fn output_paths(
    inputs: &[PathBuf],
    out_dir: Option<&Path>,
    ext: Option<&str>,
) -> Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = Vec::with_capacity(inputs.len());
    // Paths compared with their folder resolved (a/x.png is ./a/x.png).
    let key = |p: &Path| {
        let dir = p.parent().and_then(|d| d.canonicalize().ok());
        dir.map_or(p.to_path_buf(), |d| {
            d.join(p.file_name().unwrap_or_default())
        })
    };
    for input in inputs {
        let stem = input
            .file_stem()
            .ok_or_else(|| Error(format!("{}: no file name", input.display())))?;
        let own = input.extension().and_then(|e| e.to_str());
        let ext = ext.or(own).unwrap_or("png").to_ascii_lowercase();
        let path = match out_dir {
            Some(dir) => dir.join(stem).with_extension(ext),
            None => input.with_file_name(format!("{}-restored.{ext}", stem.to_string_lossy())),
        };
        if let Some(j) = paths.iter().position(|q| key(q) == key(&path)) {
            bail!(
                "{} and {} would both be written to {}: give them different names, or run them into separate -o folders",
                inputs[j].display(),
                input.display(),
                path.display()
            );
        }
        paths.push(path);
    }
    Ok(paths)
}

/// Refuses an output that would replace an input, or an existing file
/// unless `force`.
fn check_output(path: &Path, inputs: &[PathBuf], force: bool) -> Result<()> {
    let same = |a: &Path, b: &Path| matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y);
    if inputs.iter().any(|i| same(i, path)) {
        bail!(
            "{}: would replace an input; choose another output folder",
            path.display()
        );
    }
    if path.exists() && !force {
        bail!(
            "{}: already exists (pass --force to replace it)",
            path.display()
        );
    }
    Ok(())
}

/// Creates the output folder `-o` names (if missing) and checks that files
/// can be made in it, before any work.
fn output_dir(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        bail!("{}: is a file; -o names the output folder", dir.display());
    }
    std::fs::create_dir_all(dir).map_err(|e| {
        Error(format!(
            "{}: cannot create the output folder: {e}",
            dir.display()
        ))
    })?;
    writable(dir).map_err(|e| {
        Error(format!(
            "{}: cannot write in the output folder: {e}",
            dir.display()
        ))
    })
}

/// Whether files can be made in `dir` (a probe file, made and removed).
fn writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".nadb-write-test.{}", std::process::id()));
    std::fs::File::create(&probe).and_then(|_| std::fs::remove_file(&probe))
}

/// Refuses, before any work, an output file named by `flag` whose folder
/// is missing or not writable, or that names a folder.
fn output_file_folder(path: &Path, flag: &str) -> Result<()> {
    let p = path.display();
    if path.is_dir() {
        bail!("{flag} {p}: is a folder; give a file name");
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        bail!("{flag} {p}: the folder {} does not exist", dir.display());
    }
    writable(dir).map_err(|e| {
        Error(format!(
            "{flag} {p}: cannot write in {}: {e}",
            dir.display()
        ))
    })
}

/// `output_file_folder`, and the file must not exist unless `force`.
fn new_output_file(path: &Path, flag: &str, force: bool) -> Result<()> {
    output_file_folder(path, flag)?;
    if path.exists() && !force {
        bail!(
            "{flag} {}: already exists (pass --force to replace it)",
            path.display()
        );
    }
    Ok(())
}

/// The end of a command that goes on past bad inputs: Ok when none
/// failed; else each failure listed and one summary error (a lone input's
/// error is the error itself).
fn failures(mut failed: Vec<Error>, inputs: usize, done: &str) -> Result<()> {
    match failed.len() {
        0 => Ok(()),
        1 if inputs == 1 => Err(failed.remove(0)),
        n => {
            for e in &failed {
                eprintln!("failed: {e}");
            }
            bail!("{n} of {inputs} images could not be {done} (listed above)")
        }
    }
}

/// Reads `input` for `output` once the output is checked (see
/// `check_output`, `Layout::check_output`), saying on stderr what reading
/// it involved (orientation, grey, 16-bit, alpha).
fn read_input(input: &Path, output: &Path, inputs: &[PathBuf], force: bool) -> Result<Picture> {
    check_output(output, inputs, force)?;
    let picture = load_picture(input)?;
    picture.layout.check_output(input, output)?;
    for note in &picture.notes {
        eprintln!("{}: {note}", input.display());
    }
    Ok(picture)
}

fn degrade_cmd(a: DegradeArgs) -> Result<()> {
    let task: Task = a.task.parse()?;
    // Each output keeps its input's format (a JPEG degraded by JPEG stays one).
    let outputs = output_paths(&a.inputs, Some(&a.out), None)?;
    let raw = a
        .tensors
        .then(|| output_paths(&a.inputs, Some(&a.out), Some("safetensors")))
        .transpose()?;
    output_dir(&a.out)?;
    // A bad input fails alone, as in restore.
    let mut failed = Vec::new();
    for (k, (input, path)) in a.inputs.iter().zip(&outputs).enumerate() {
        let raw = raw.as_ref().map(|r| &r[k]);
        let done = raw
            .map_or(Ok(()), |r| check_output(r, &a.inputs, a.force))
            .and_then(|()| read_input(input, path, &a.inputs, a.force))
            .and_then(|p| {
                let y = degrade(task, &p.pixels)?;
                save_output(path, &y, 0, &p.layout, a.force)?;
                println!("{} -> {}", input.display(), path.display());
                if let Some(raw) = raw {
                    checkpoint::write_tensors(raw, &[("x", &y)])?;
                    println!("{} -> {}", input.display(), raw.display());
                }
                Ok(())
            });
        if let Err(e) = done {
            failed.push(e);
        }
    }
    failures(failed, a.inputs.len(), "degraded")
}

fn run_settings(a: &TrainArgs, role: Role) -> Result<RunSettings> {
    let task: Task = a.task.parse()?;
    let cosine_steps = match a.lr_schedule.as_str() {
        "constant" => None,
        "cosine" => Some(a.steps),
        other => bail!("--lr-schedule {other}: unknown schedule (constant or cosine)"),
    };
    Ok(RunSettings {
        seed: a.seed,
        batch: a.batch,
        crop: a.crop,
        lr: a.lr,
        warmup: a.warmup,
        cosine_steps,
        ema_decay: a.ema,
        clip: a.clip,
        init: a.init.clone(),
        ..RunSettings::new(role, task)
    })
}

fn train_cmd(
    a: &TrainArgs,
    settings: RunSettings,
    device: Device,
    device_line: &str,
) -> Result<()> {
    let config = UnetConfig::named(&a.config)?;
    settings.check(&config)?;
    if a.minutes.is_some_and(|m| !(m.is_finite() && m > 0.0)) {
        bail!("--minutes must be a positive number of minutes");
    }
    output_file_folder(&a.out, "-o")?;
    let trainer = if a.resume {
        let t = Trainer::resume(&a.out)?;
        // The NADB schedule is no flag: a run keeps the one it started with
        // (before target scales were per method, nadb-nomean's was 2).
        let settings = RunSettings {
            nadb: t.settings.nadb,
            ..settings
        };
        if t.settings != settings {
            bail!(
                "{}: was trained with other settings ({}); resume with the same flags",
                a.out.display(),
                serde_json::to_string(&t.settings).unwrap_or_default()
            );
        }
        if t.net.config.name != config.name {
            bail!(
                "{}: is a '{}' network, not '{}'",
                a.out.display(),
                t.net.config.name,
                config.name
            );
        }
        eprintln!("resuming {} at step {}", a.out.display(), t.step);
        t
    } else {
        if a.out.exists() {
            bail!(
                "{}: already exists (pass --resume to continue it, or choose another --out)",
                a.out.display()
            );
        }
        Trainer::new(settings, &config)?
    };
    let data = Arc::new(Dataset::open(&a.data, trainer.settings.crop)?);
    eprintln!("{device_line}");
    let mut trainer = trainer.to_device(device)?;
    eprintln!(
        "training {:?} ({} parameters) on {} images from {}",
        trainer.settings.role,
        trainer.net.param_count(),
        data.images.len(),
        a.data.display()
    );
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(a.steps);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} step {pos}/{len} {msg} eta {eta}")
                .expect("valid template"),
        );
        bar.set_position(trainer.step);
        bar
    });
    let start = Instant::now();
    let first_step = trainer.step;
    trainer.deadline = a.minutes.map(|m| start + Duration::from_secs_f64(m * 60.0));
    trainer.detect_anomaly = a.detect_anomaly;
    let interrupt = Arc::new(AtomicBool::new(false));
    trainer.interrupt = Some(interrupt.clone());
    let flag = interrupt.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130); // the second one: now
        }
        eprintln!("\ninterrupted: saving at the end of this step (again to quit without saving)");
    })
    .map_err(|e| Error(format!("cannot install the Ctrl-C handler: {e}")))?;
    trainer.run(data, a.steps, &a.out, a.save_every, |p| {
        let msg = format!("loss {:.5} {:.1} img/s", p.loss, p.images_per_second);
        match &bar {
            Some(bar) => {
                bar.set_position(p.step);
                bar.set_message(msg);
            }
            None if p.step.is_multiple_of(a.log_every.max(1)) || p.step == p.total => {
                let elapsed = start.elapsed().as_secs_f64();
                let done = (p.step - first_step).max(1) as f64;
                let eta = elapsed / done * (p.total - p.step) as f64;
                eprintln!(
                    "step {}/{} {msg} ({elapsed:.0} s, eta {eta:.0} s)",
                    p.step, p.total
                )
            }
            None => {}
        }
    })?;
    if let Some(bar) = bar {
        bar.finish();
    }
    if interrupt.load(Ordering::SeqCst) {
        eprintln!(
            "interrupted: saved {} at step {} (continue with --resume)",
            a.out.display(),
            trainer.step
        );
        std::process::exit(130);
    }
    eprintln!("saved {} at step {}", a.out.display(), trainer.step);
    Ok(())
}

fn restore_cmd(a: RestoreArgs, device: Device, device_line: &str) -> Result<()> {
    let task: Task = a.task.parse()?;
    let ext = match a.format.as_str() {
        "png" => "png",
        "jpg" | "jpeg" => "jpg",
        other => bail!("unknown --format '{other}' (png or jpg)"),
    };
    let checkpoint = match &a.checkpoint {
        Some(c) => c.clone(),
        None => shipped(task, "nadb")?,
    };
    let outputs = output_paths(&a.inputs, a.out.as_deref(), Some(ext))?;
    if let Some(dir) = &a.out {
        output_dir(dir)?;
    }
    let mut restorer = Restorer::load(&checkpoint, a.mean_checkpoint.as_deref(), task)?;
    if let Some(on) = a.ot_ode {
        restorer.set_ot_ode(on)?;
    }
    restorer.bridge().check_nfe(a.nfe)?;
    eprintln!("{device_line}");
    let restorer = restorer.to_device(device)?;
    // A bad input (unreadable, not an image, an existing output) fails
    // alone: the others are restored, the failures listed at the end.
    let mut failed: Vec<Error> = Vec::new();
    // ((input, output, layout), image) of one size, restored together.
    let mut pending: Vec<(Job, Tensor)> = Vec::new();
    let progress = RestoreProgress::new(a.inputs.len());
    for (input, out) in a.inputs.iter().zip(outputs) {
        match read_input(input, &out, &a.inputs, a.force) {
            Err(e) => failed.push(e),
            Ok(Picture { pixels, layout, .. }) => {
                let full = pending.len() == a.batch.max(1);
                if full
                    || pending
                        .first()
                        .is_some_and(|(_, p)| p.shape() != pixels.shape())
                {
                    restore_batch(&restorer, &mut pending, &a, &mut failed, &progress);
                }
                pending.push(((input, out, layout), pixels));
            }
        }
    }
    restore_batch(&restorer, &mut pending, &a, &mut failed, &progress);
    failures(failed, a.inputs.len(), "restored")
}

/// An image to restore: its input, output and layout.
type Job<'a> = (&'a Path, PathBuf, Layout);

/// The progress line of a restore run: nothing in its first seconds (a
/// quick run says no more than before), then a line at most every few
/// seconds, as each batch starts and each tile of a large image ends.
struct RestoreProgress {
    images: usize,
    /// Images handed to the restorer so far.
    started: Cell<usize>,
    next_line: Cell<Instant>,
}

impl RestoreProgress {
    const EVERY: Duration = Duration::from_secs(3);

    fn new(images: usize) -> RestoreProgress {
        RestoreProgress {
            images,
            started: Cell::new(0),
            next_line: Cell::new(Instant::now() + Self::EVERY),
        }
    }

    fn say(&self, what: impl FnOnce() -> String) {
        let now = Instant::now();
        if now >= self.next_line.get() {
            eprintln!("restoring {}", what());
            self.next_line.set(now + Self::EVERY);
        }
    }
}

/// Restores and writes the pending images (one size), then empties the
/// list; a failure is recorded for each image of the batch.
fn restore_batch(
    r: &Restorer,
    pending: &mut Vec<(Job, Tensor)>,
    a: &RestoreArgs,
    failed: &mut Vec<Error>,
    progress: &RestoreProgress,
) {
    let (paths, mut images): (Vec<_>, Vec<Tensor>) = pending.drain(..).unzip();
    // A failure to restore is the input's; a failure to write, the output's.
    let fail_all = |failed: &mut Vec<Error>, e: Error| {
        failed.extend(
            paths
                .iter()
                .map(|(input, ..)| Error(format!("{}: {e}", input.display()))),
        )
    };
    let Some(first) = images.first() else {
        return;
    };
    let (_, h, w, c) = first.nhwc();
    // A lone image goes as it is: a 4096x4096 one is 200 MB of f32.
    let batch = match images.len() {
        1 => images.pop().expect("one image"),
        n => Tensor::from_vec(
            &[n, h, w, c],
            images
                .iter()
                .flat_map(|t| t.data().iter().copied())
                .collect(),
        ),
    };
    drop(images);
    let (first, n, total) = (progress.started.get(), paths.len(), progress.images);
    progress.started.set(first + n);
    let restore = || {
        progress.say(|| match n {
            1 => format!("image {} of {total}", first + 1),
            n => format!("images {}-{} of {total}", first + 1, first + n),
        });
        let mut tile_done = |t: TileProgress| {
            progress.say(|| {
                format!(
                    "image {} of {total}, tile {} of {}",
                    first + t.image + 1,
                    t.tile,
                    t.tiles
                )
            })
        };
        r.restore_reporting(&batch, a.nfe, a.seed, a.max_memory << 20, &mut tile_done)
    };
    if a.profile {
        let start = Instant::now();
        if let Err(e) = restore() {
            fail_all(failed, e);
            return;
        }
        eprintln!(
            "profile: warm-up restore {:.3} s (on the GPU: includes the graph capture)",
            start.elapsed().as_secs_f64()
        );
    }
    let before = launch_counts(r.device());
    let start = Instant::now();
    let result = restore();
    let seconds = start.elapsed().as_secs_f64();
    if a.profile {
        print_profile(r, a.nfe, paths.len(), seconds, before);
    }
    match result {
        Ok(out) => {
            for (i, (_, path, layout)) in paths.iter().enumerate() {
                match save_output(path, &out, i, layout, a.force) {
                    Ok(()) => println!("{}", path.display()),
                    Err(e) => failed.push(e),
                }
            }
            eprintln!(
                "restored {} image(s) of {w}x{h} with {}{} at NFE {} in {seconds:.2} s",
                paths.len(),
                r.method,
                if r.ot_ode() { " (OT-ODE)" } else { "" },
                a.nfe,
            );
        }
        Err(e) => fail_all(failed, e),
    }
}

/// (kernel launches, graph launches) issued so far; zero on the CPU.
fn launch_counts(device: Device) -> (u64, u64) {
    match (device, nadb::cuda::gpu()) {
        (Device::Cuda(_), Ok(g)) => (g.launches(), g.graph_launches()),
        _ => (0, 0),
    }
}

/// The `--profile` lines of one measured restore of `images` images.
fn print_profile(r: &Restorer, nfe: usize, images: usize, seconds: f64, before: (u64, u64)) {
    let device = r.device();
    let (launches, graphs) = launch_counts(device);
    let evaluations = nfe + usize::from(r.method.uses_mean());
    eprintln!(
        "profile: {seconds:.4} s for {images} image(s): {evaluations} network evaluations per batch \
         ({nfe} bridge{})",
        if r.method.uses_mean() { " + 1 mean" } else { "" }
    );
    match device {
        Device::Cpu => eprintln!("profile: cpu: no kernels or graphs"),
        Device::Cuda(_) => eprintln!(
            "profile: cuda: {} graph launch(es), each replaying {} kernels; {} kernel launches outside graphs",
            graphs - before.1,
            r.graph_kernels().unwrap_or(0),
            launches - before.0
        ),
    }
}

/// The shipped weights of a task (see `nadb::weights` for where they are
/// looked for).
fn shipped(task: Task, what: &str) -> Result<PathBuf> {
    nadb::weights::find(&format!("{task}-{what}.safetensors"))
}

/// `shipped`, or where it would be in the current folder: eval names
/// every method's default, used or not, and a used one that is missing
/// fails when it is opened.
fn shipped_or_here(task: Task, what: &str) -> PathBuf {
    shipped(task, what)
        .unwrap_or_else(|_| PathBuf::from(format!("weights/{task}-{what}.safetensors")))
}

fn eval_cmd(a: EvalArgs, device: Device, device_line: &str) -> Result<()> {
    let task: Task = a.task.parse()?;
    if let Some(path) = &a.csv {
        new_output_file(path, "--csv", a.force)?;
    }
    let mut checkpoints = Vec::new();
    for spec in &a.checkpoint {
        let Some((m, p)) = spec.split_once('=') else {
            bail!("--checkpoint '{spec}': expected METHOD=PATH");
        };
        checkpoints.push((m.parse::<Method>()?, PathBuf::from(p)));
    }
    for m in Method::ALL {
        if !checkpoints.iter().any(|(c, _)| *c == m) {
            checkpoints.push((m, shipped_or_here(task, m.name())));
        }
    }
    let plan = EvalPlan {
        task,
        rows: a.methods.clone(),
        nfes: a.nfe.clone(),
        thresholds: a.threshold.clone(),
        ot_ode: a.ot_ode,
        checkpoints,
        mean_checkpoint: Some(
            a.mean_checkpoint
                .clone()
                .unwrap_or_else(|| shipped_or_here(task, "mean")),
        ),
        crop: a.crop,
        seed: a.seed,
        spread: a.spread,
        device,
    };
    plan.check()?;
    eprintln!("{device_line}");
    let (rows, images) = evaluate(&a.data, &plan)?;
    print!("{}", eval::markdown(task, images, &rows));
    if let Some(path) = &a.csv {
        write_file(path, eval::csv(task, &rows).as_bytes(), a.force)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn diagnose_cmd(a: DiagnoseArgs, device: Device, device_line: &str) -> Result<()> {
    let task: Task = a.task.parse()?;
    let csv = a.out.with_extension("csv");
    let png = a.out.with_extension("png");
    for path in [&csv, &png] {
        new_output_file(path, "-o", a.force)?;
    }
    let plan = diagnose::DiagnosePlan {
        task,
        checkpoints: a.checkpoint.clone(),
        mean_checkpoint: a.mean_checkpoint.clone(),
        batch: a.batch,
        crop: a.crop,
        seed: a.seed,
        device,
    };
    eprintln!("{device_line}");
    let points = diagnose::diagnose(&a.data, &plan)?;
    write_file(&csv, diagnose::csv(&points).as_bytes(), a.force)?;
    diagnose::plot(&points, &png, a.force)?;
    print!("{}", diagnose::csv(&points));
    eprintln!("wrote {} and {}", csv.display(), png.display());
    Ok(())
}

fn forward_cmd(a: ForwardArgs, device: Device, device_line: &str) -> Result<()> {
    new_output_file(&a.out, "-o", a.force)?;
    let (net, _) = nadb::train::load_inference_net(&a.checkpoint)?;
    let [x, t] = <[Option<Tensor>; 2]>::try_from(checkpoint::read_tensors(&a.input, &["x", "t"])?)
        .expect("two names asked");
    let input = a.input.display();
    let Some(x) = x else {
        bail!("{input}: no tensor 'x'");
    };
    let c = net.config.in_channels;
    let m = net.config.side_multiple();
    match x.shape() {
        &[_, h, w, ch] if ch == c && h % m == 0 && w % m == 0 => {}
        other => {
            bail!("{input}: 'x' is {other:?}; expected [n, h, w, {c}] with sides a multiple of {m}")
        }
    }
    let n = x.shape()[0];
    let t = match (net.config.time_input, t) {
        (true, Some(t)) if t.shape() == [n] => Some(t),
        (true, _) => bail!("{input}: a bridge network needs 't', f32 [{n}]"),
        (false, _) => None,
    };
    eprintln!("{device_line}");
    let net = net.on(device)?;
    let x = device.put(x)?;
    let t = match (device, t) {
        (Device::Cuda(_), Some(t)) => Some(t.to_cuda(nadb::tensor::DType::F32)?),
        (_, t) => t,
    };
    let y = nadb::train::infer_at(&net, &x, t).into_host()?;
    checkpoint::write_tensors(&a.out, &[("y", &y)])?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

fn export_cmd(a: ExportArgs) -> Result<()> {
    if a.out.exists() && !a.force {
        bail!(
            "{}: already exists (pass --force to replace it)",
            a.out.display()
        );
    }
    nadb::train::export_weights(&a.checkpoint, &a.out, a.mean_checkpoint.as_deref(), a.force)?;
    let bytes = std::fs::metadata(&a.out).map(|m| m.len()).unwrap_or(0);
    eprintln!("wrote {} ({:.1} MB)", a.out.display(), bytes as f64 / 1e6);
    Ok(())
}

fn bench_cmd(a: BenchArgs, device: Device, device_line: &str) -> Result<()> {
    let plan = nadb::bench::BenchPlan {
        config: UnetConfig::named(&a.config)?,
        task: a.task.parse()?,
        method: a.method.parse()?,
        ot_ode: a.ot_ode,
        size: a.size,
        nfes: a.nfe,
        batch: a.batch,
        train_batch: a.train_batch,
        train_size: a.train_size,
        iters: a.iters,
        device,
    };
    plan.bridge()?;
    for (path, flag) in [(&a.out, "-o"), (&a.trace, "--trace")] {
        if let Some(path) = path {
            new_output_file(path, flag, a.force)?;
        }
    }
    eprintln!("{device_line}");
    if a.profile {
        return profile_cmd(
            &plan,
            device_line,
            a.out.as_deref(),
            a.trace.as_deref(),
            a.force,
        );
    }
    let table = nadb::bench::markdown(device_line, &nadb::bench::run(&plan)?);
    print!("{table}");
    if let Some(path) = &a.out {
        write_file(path, table.as_bytes(), a.force)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// `bench --profile`: the per-op tables, and the Chrome trace.
fn profile_cmd(
    plan: &nadb::bench::BenchPlan,
    device_line: &str,
    out: Option<&Path>,
    trace: Option<&Path>,
    force: bool,
) -> Result<()> {
    let runs = nadb::bench::profile(plan)?;
    let mut text = format!("{device_line}\n\n");
    for r in &runs {
        text += &nadb::profile::table(&r.what, &r.spans, r.seconds);
        text += "\n";
    }
    print!("{text}");
    if let Some(path) = out {
        write_file(path, text.as_bytes(), force)?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = trace {
        let sections: Vec<(&str, &[nadb::profile::Span])> = runs
            .iter()
            .map(|r| (r.what.as_str(), &r.spans[..]))
            .collect();
        write_file(
            path,
            nadb::profile::chrome_trace(&sections).as_bytes(),
            force,
        )?;
        eprintln!(
            "wrote {} (Chrome trace: open it in Perfetto)",
            path.display()
        );
    }
    Ok(())
}

/// The parsed command line; each `--task` help lists the task names (a
/// doc comment cannot name `TASK_NAMES`).
fn parse_command_line() -> Cli {
    let help = format!("The degradation: {}", TASK_NAMES.join(", "));
    let mut cmd = Cli::command();
    for sub in cmd.get_subcommands_mut() {
        if sub.get_arguments().any(|a| a.get_id() == "task") {
            *sub = std::mem::take(sub).mut_arg("task", |a| a.help(help.clone()));
        }
    }
    Cli::from_arg_matches(&cmd.get_matches()).unwrap_or_else(|e| e.exit())
}

fn main() -> ExitCode {
    let cli = parse_command_line();
    let needs_device = !matches!(
        cli.command,
        Command::Info(_) | Command::Degrade(_) | Command::Export(_)
    );
    // Each command prints `device_line` (which device `--device` took, and
    // why) once its inputs are checked, so a bad input stays one line.
    let selected = needs_device.then(|| Device::select(cli.device, cli.precision));
    let (device, device_line) = match selected.transpose() {
        Ok(d) => d.unwrap_or((Device::Cpu, String::new())),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Info(a) => info(a),
        Command::Degrade(a) => degrade_cmd(a),
        Command::TrainMean(a) => {
            run_settings(&a, Role::Mean).and_then(|s| train_cmd(&a, s, device, &device_line))
        }
        Command::Train(a) => a
            .method
            .parse()
            .and_then(|m| run_settings(&a.common, Role::Bridge(m)))
            .and_then(|s| s.with_ot_ode(a.ot_ode))
            .and_then(|s| {
                train_cmd(
                    &a.common,
                    RunSettings {
                        mean_checkpoint: a.mean_checkpoint.clone(),
                        ..s
                    },
                    device,
                    &device_line,
                )
            }),
        Command::Restore(a) => restore_cmd(a, device, &device_line),
        Command::Eval(a) => eval_cmd(a, device, &device_line),
        Command::Diagnose(a) => diagnose_cmd(a, device, &device_line),
        Command::Forward(a) => forward_cmd(a, device, &device_line),
        Command::Export(a) => export_cmd(a),
        Command::Bench(a) => bench_cmd(a, device, &device_line),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

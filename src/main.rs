//! The `nadb` command line.

use clap::{Parser, Subcommand};
use nadb::checkpoint::{Checkpoint, ADAM_M_PREFIX, ADAM_V_PREFIX, EMA_PREFIX};
use nadb::nn::{forward_flops, param_count, param_specs, UnetConfig, CONFIG_NAMES};
use nadb::{bail, Result};
use std::path::Path;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "nadb",
    version,
    about = "Noise-Aligned Diffusion Bridge image restoration: train and run NADB and I2SB"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a network's configuration, parameter count and forward FLOPs.
    Info {
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
    },
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

fn info(
    target: Option<String>,
    config: Option<String>,
    mean: bool,
    size: usize,
    batch: usize,
) -> Result<()> {
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
        let specs = param_specs(&c.config)?;
        c.check_group("", &specs)?;
        let mut groups = vec!["weights"];
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
        println!(
            "tensors       {} (all present, shapes checked)",
            groups.join(", ")
        );
        println!(
            "training      {}",
            c.training.as_deref().unwrap_or("none (weights only)")
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info {
            target,
            config,
            mean,
            size,
            batch,
        } => info(target, config, mean, size, batch),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

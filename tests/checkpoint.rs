//! Checkpoints: round trip, and every kind of damage refused with a message
//! that names the file and the tensor, from the library and from the CLI.

use nadb::checkpoint::{self, Checkpoint, Group, EMA_PREFIX};
use nadb::nn::{param_specs, Unet, UnetConfig};
use std::path::Path;
use std::process::Command;

fn tiny() -> Unet {
    Unet::new(&UnetConfig::named("tiny").unwrap(), 5).unwrap()
}

fn nadb(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nadb"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The CLI must fail with exactly one line, an error, and no panic.
fn assert_one_line_error(path: &Path, expect: &str) {
    let (ok, _, err) = nadb(&["info", path.to_str().unwrap()]);
    assert!(!ok, "nadb info {} succeeded", path.display());
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(
        err.starts_with("error: ") && !err.contains("panicked"),
        "{err}"
    );
    assert!(err.contains(expect), "'{expect}' not in: {err}");
    assert!(
        err.contains(path.to_str().unwrap()),
        "file not named: {err}"
    );
}

#[test]
fn round_trip_keeps_every_group_and_the_training_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.safetensors");
    let net = tiny();
    let other = Unet::new(&net.config, 6).unwrap();
    let groups = [
        Group {
            prefix: "",
            tensors: net.params().iter().map(|p| &**p).collect(),
        },
        Group {
            prefix: EMA_PREFIX,
            tensors: other.params().iter().map(|p| &**p).collect(),
        },
    ];
    checkpoint::save(
        &path,
        &net.config,
        net.specs(),
        &groups,
        Some(r#"{"step":12}"#),
    )
    .unwrap();
    let ck = Checkpoint::open(&path).unwrap();
    assert_eq!(ck.config, net.config);
    assert_eq!(ck.training.as_deref(), Some(r#"{"step":12}"#));
    let loaded = ck.load_unet("").unwrap();
    let ema = ck.load_unet(EMA_PREFIX).unwrap();
    for ((a, b), (c, d)) in net
        .params()
        .iter()
        .zip(loaded.params())
        .zip(other.params().iter().zip(ema.params()))
    {
        assert_eq!(a, b);
        assert_eq!(c, d);
    }
    // No temporary file is left beside it.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    let (ok, out, _) = nadb(&["info", path.to_str().unwrap()]);
    assert!(ok);
    assert!(
        out.contains("827,491") && out.contains("weights, ema"),
        "{out}"
    );
}

#[test]
fn truncated_checkpoint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.safetensors");
    checkpoint::save_weights(&path, &tiny()).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    for keep in [bytes.len() - 100, 20, 3] {
        std::fs::write(&path, &bytes[..keep]).unwrap();
        let err = Checkpoint::open(&path)
            .err()
            .expect("truncated file opened");
        assert!(err.0.contains("truncated"), "{err}");
        assert_one_line_error(&path, "truncated");
    }
}

#[test]
fn flipped_shape_and_missing_tensor_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let net = tiny();
    let specs = param_specs(&net.config).unwrap();
    let tensors: Vec<_> = net.params().iter().map(|p| (**p).clone()).collect();

    // Flip the shape of time_embed.0.weight ([128, 32] -> [32, 128]).
    let mut flipped_specs = specs.clone();
    let mut flipped = tensors.clone();
    let i = specs
        .iter()
        .position(|s| s.name == "time_embed.0.weight")
        .unwrap();
    flipped_specs[i].shape.reverse();
    flipped[i] = flipped[i].clone().reshape(&flipped_specs[i].shape);
    let path = dir.path().join("flipped.safetensors");
    let group = Group {
        prefix: "",
        tensors: flipped.iter().collect(),
    };
    checkpoint::save(&path, &net.config, &flipped_specs, &[group], None).unwrap();
    let err = Checkpoint::open(&path)
        .unwrap()
        .load_unet("")
        .err()
        .unwrap();
    assert!(
        err.0.contains("'time_embed.0.weight' has shape [32, 128]"),
        "{err}"
    );
    assert_one_line_error(&path, "time_embed.0.weight");

    // Drop the last tensor.
    let path = dir.path().join("missing.safetensors");
    let group = Group {
        prefix: "",
        tensors: tensors[..tensors.len() - 1].iter().collect(),
    };
    checkpoint::save(
        &path,
        &net.config,
        &specs[..specs.len() - 1],
        &[group],
        None,
    )
    .unwrap();
    let err = Checkpoint::open(&path)
        .unwrap()
        .load_unet("")
        .err()
        .unwrap();
    assert!(err.0.contains("missing tensor 'out.2.bias'"), "{err}");
    assert_one_line_error(&path, "missing tensor 'out.2.bias'");
}

#[test]
fn checkpoint_for_another_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.safetensors");
    checkpoint::save_weights(&path, &tiny()).unwrap();
    let ck = Checkpoint::open(&path).unwrap();
    let err = ck
        .expect_config(&UnetConfig::named("small").unwrap())
        .err()
        .unwrap();
    assert!(
        err.0.contains("made for config 'tiny'") && err.0.contains("expected 'small'"),
        "{err}"
    );
    assert!(ck
        .expect_config(&UnetConfig::named("tiny").unwrap())
        .is_ok());
}

#[test]
fn not_a_checkpoint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("noise.safetensors");
    std::fs::write(&path, b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!").unwrap();
    assert_one_line_error(&path, "not a valid safetensors file");
}

#[test]
fn info_reports_named_configs() {
    for (name, count) in [
        ("tiny", "827,491"),
        ("small", "5,461,955"),
        ("base", "44,173,827"),
        ("adm256", "552,807,171"),
    ] {
        let (ok, out, err) = nadb(&["info", "--config", name]);
        assert!(ok, "{err}");
        assert!(out.contains(&format!("parameters    {count}")), "{out}");
        assert!(out.contains("GFLOP at batch 1, 256x256"), "{out}");
    }
    let (ok, _, err) = nadb(&["info", "--config", "huge"]);
    assert!(!ok && err.contains("unknown config 'huge'"), "{err}");
}

/// A `tiny` nadb-nomean training checkpoint at `path` whose EMA weights are
/// all different from zero (a fresh network's output layer is zero).
fn saved_bridge_with_varied_ema(path: &Path) -> nadb::train::Trainer {
    use nadb::bridge::Method;
    use nadb::degrade::Task;
    use nadb::train::{Role, RunSettings, Trainer};
    let settings = RunSettings::new(Role::Bridge(Method::NadbNoMean), Task::Sr4Pool);
    let mut t = Trainer::new(settings, &UnetConfig::named("tiny").unwrap()).unwrap();
    for (i, w) in t.ema.weights.iter_mut().enumerate() {
        for (j, v) in w.data_mut().iter_mut().enumerate() {
            *v = ((i * 31 + j * 7) % 97) as f32 / 97.0 - 0.5;
        }
    }
    t.save(path).unwrap();
    t
}

/// `nadb export`: a training checkpoint becomes its EMA weights alone in
/// bf16 (half the size of one f32 group), keeps the run's settings with the
/// mean network's path replaced, refuses to overwrite, and restores.
#[test]
fn export_keeps_the_ema_weights_in_bf16_and_the_settings() {
    use nadb::bridge::Method;
    use nadb::train::{load_inference_net, Role};
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("run.safetensors");
    let out = dir.path().join("shipped.safetensors");
    let t = saved_bridge_with_varied_ema(&src);
    let (ok, _, err) = nadb(&[
        "export",
        src.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--mean-checkpoint",
        "weights/sr4-pool-mean.safetensors",
    ]);
    assert!(ok, "{err}");
    let (net, state) = load_inference_net(&out).unwrap();
    let state = state.unwrap();
    assert_eq!(
        state.settings.mean_checkpoint.as_deref(),
        Some(Path::new("weights/sr4-pool-mean.safetensors"))
    );
    assert_eq!(state.settings.role, Role::Bridge(Method::NadbNoMean));
    for (p, e) in net.params().iter().zip(&t.ema.weights) {
        let err = p.max_abs_diff(e);
        assert!(
            err <= 0.5 / 128.0,
            "bf16 round trip moved a weight by {err}"
        );
    }
    let f32_group: u64 = t.ema.weights.iter().map(|w| 4 * w.numel() as u64).sum();
    let size = std::fs::metadata(&out).unwrap().len();
    assert!(
        size < f32_group * 6 / 10,
        "{size} bytes for {f32_group} bytes of f32"
    );
    let (ok, _, err) = nadb(&["export", src.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(!ok && err.contains("already exists"), "{err}");
}

/// `nadb forward` runs a checkpoint's network on "x" (and "t") from a
/// safetensors file and writes "y": the same numbers as the library's
/// forward pass; a bridge without "t" is refused in one line.
#[test]
fn forward_writes_the_networks_output() {
    use nadb::train::infer_at;
    use nadb::Tensor;
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("bridge.safetensors");
    saved_bridge_with_varied_ema(&ck);
    let x = Tensor::from_vec(
        &[2, 16, 16, 3],
        (0..2 * 16 * 16 * 3)
            .map(|i| ((i % 23) as f32 / 11.5) - 1.0)
            .collect(),
    );
    let times = Tensor::from_vec(&[2], vec![10.0, 900.0]);
    let input = dir.path().join("in.safetensors");
    let out = dir.path().join("out.safetensors");
    checkpoint::write_tensors(&input, &[("x", &x), ("t", &times)]).unwrap();
    let (ok, _, err) = nadb(&[
        "--device",
        "cpu",
        "forward",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let y = checkpoint::read_tensors(&out, &["y"])
        .unwrap()
        .remove(0)
        .unwrap();
    let (net, _) = nadb::train::load_inference_net(&ck).unwrap();
    assert_eq!(y, infer_at(&net, &x, Some(times)));
    checkpoint::write_tensors(&input, &[("x", &x)]).unwrap();
    let (ok, _, err) = nadb(&[
        "forward",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--force",
    ]);
    assert!(
        !ok && err.lines().count() == 1 && err.contains("needs 't'"),
        "{err}"
    );
}

/// Settings written before the target scale was per method and before
/// I2SB's OT-ODE existed load with what they were trained with: the
/// recorded c (2 for nadb-nomean then) and no OT-ODE. The shipped weights
/// keep their meaning.
#[test]
fn settings_from_before_ot_ode_and_per_method_scales_load_as_trained() {
    use nadb::bridge::{Bridge, Method};
    use nadb::degrade::Task;
    use nadb::train::{load_inference_net, Role, RunSettings, TrainingState};
    let old = |role: &str, task: &str, nadb: &str, beta: &str| {
        format!(
            r#"{{"settings":{{"role":{role},"task":"{task}","seed":0,"batch":8,"crop":64,"lr":0.0001,"warmup":500,"weight_decay":0.0,"ema_decay":0.999,"clip":1.0,"nadb":{nadb},"i2sb_beta_max":{beta},"mean_checkpoint":null}},"step":3}}"#
        )
    };
    let schedule = r#"{"alpha":0.4,"k":0.75,"c":2.0,"threshold":0.375}"#;
    let nomean: TrainingState = serde_json::from_str(&old(
        r#"{"bridge":"nadb-nomean"}"#,
        "sr4-pool",
        schedule,
        "null",
    ))
    .unwrap();
    assert!(matches!(nomean.settings.bridge().unwrap(), Bridge::Nadb(s) if s.c == 2.0));
    let i2sb: TrainingState =
        serde_json::from_str(&old(r#"{"bridge":"i2sb"}"#, "blur-uniform", "null", "1.0")).unwrap();
    assert!(!i2sb.settings.i2sb_ot_ode);
    assert!(
        matches!(i2sb.settings.bridge().unwrap(), Bridge::I2sb(s) if !s.ot_ode && s.beta_max == 1.0)
    );
    // New runs: c = 1 without the mean network, OT-ODE on the paper blurs.
    let fresh = RunSettings::new(Role::Bridge(Method::NadbNoMean), Task::Sr4Pool);
    assert!(matches!(fresh.bridge().unwrap(), Bridge::Nadb(s) if s.c == 1.0));
    assert!(RunSettings::new(Role::Bridge(Method::I2sbMean), Task::BlurGauss).i2sb_ot_ode);
    for task in ["sr4-bicubic", "jpeg10"] {
        let path = format!(
            "{}/weights/{task}-nadb.safetensors",
            env!("CARGO_MANIFEST_DIR")
        );
        let state = load_inference_net(Path::new(&path)).unwrap().1.unwrap();
        assert_eq!(state.settings.role, Role::Bridge(Method::Nadb));
        assert!(matches!(state.settings.bridge().unwrap(), Bridge::Nadb(s) if s.c == 2.0));
    }
}

/// The EMA's decay follows the reference's (torch_ema, `use_num_updates`)
/// warm-up `min(decay, (1 + n) / (10 + n))` for the n-th update, and an
/// update mixes `d * ema + (1 - d) * weight`.
#[test]
fn ema_warm_up_follows_the_reference() {
    let weight = nadb::Tensor::from_vec(&[2], vec![1.0, -3.0]);
    let mut ema = nadb::optim::Ema::new([&weight], 0.999);
    assert_eq!(ema.decay_at(1), 2.0 / 11.0);
    assert_eq!(ema.decay_at(100), 101.0 / 110.0);
    assert_eq!(ema.decay_at(100_000), 0.999);
    let moved = nadb::Tensor::from_vec(&[2], vec![2.0, 5.0]);
    let d = ema.decay_at(1);
    ema.update([&moved], d);
    let expect = [d * 1.0 + (1.0 - d) * 2.0, d * -3.0 + (1.0 - d) * 5.0];
    assert_eq!(ema.weights[0].data(), &expect[..]);
}

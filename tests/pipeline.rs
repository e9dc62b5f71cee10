//! End to end on the CPU: a `tiny` mean network and a `tiny` NADB bridge
//! trained for a few hundred steps on small synthetic photographs restore
//! `sr4-pool` images better than the degraded input; training is
//! deterministic and resumes bit for bit; the CLI refuses bad input with one
//! line and loses nothing.

use nadb::bridge::Method;
use nadb::checkpoint::{Checkpoint, ADAM_M_PREFIX, ADAM_V_PREFIX, EMA_PREFIX};
use nadb::data::Dataset;
use nadb::degrade::{degrade, Task};
use nadb::imageio::{load_image, save_image};
use nadb::metrics::psnr;
use nadb::nn::{param_specs, UnetConfig};
use nadb::restore::Restorer;
use nadb::train::{Role, RunSettings, Trainer};
use nadb::Tensor;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

/// A smooth scene with sharp edges: what 4x pooling destroys and a network
/// can learn to put back. `[1, side, side, 3]` in [-1, 1].
fn scene(side: usize, seed: usize) -> Tensor {
    let s = seed as f32;
    let mut data = Vec::with_capacity(side * side * 3);
    for y in 0..side {
        for x in 0..side {
            let (fx, fy) = (x as f32, y as f32);
            let smooth = 0.4 * ((fx * 0.07 + s).sin() * (fy * 0.05 - s).cos());
            let edge = if (fx + 0.6 * fy + 7.0 * s) % 23.0 < 11.0 {
                0.35
            } else {
                -0.35
            };
            for c in 0..3 {
                let tint = 0.15 * ((c as f32 + s) * 1.7).sin();
                data.push((smooth + edge + tint).clamp(-1.0, 1.0));
            }
        }
    }
    Tensor::from_vec(&[1, side, side, 3], data)
}

fn write_scenes(dir: &Path, count: usize, side: usize, first_seed: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..count {
        let path = dir.join(format!("scene{i}.png"));
        save_image(&path, &scene(side, first_seed + i), 0).unwrap();
    }
}

/// `count` 32x32 scenes written to `dir/train`, opened for 16x16 crops.
fn scene_crops(dir: &Path, count: usize, first_seed: usize) -> Arc<Dataset> {
    write_scenes(&dir.join("train"), count, 32, first_seed);
    Arc::new(Dataset::open(&dir.join("train"), 16).unwrap())
}

fn settings(role: Role, mean: Option<&Path>) -> RunSettings {
    RunSettings {
        batch: 4,
        crop: 16,
        lr: 2e-3,
        warmup: 20,
        ema_decay: 0.95,
        mean_checkpoint: mean.map(Path::to_path_buf),
        ..RunSettings::new(role, Task::Sr4Pool)
    }
}

#[test]
fn the_cosine_schedule_warms_up_then_falls_to_zero_at_its_last_step() {
    let constant = RunSettings {
        lr: 1e-3,
        warmup: 10,
        ..RunSettings::new(Role::Mean, Task::Sr4Pool)
    };
    let cosine = RunSettings {
        cosine_steps: Some(110),
        ..constant.clone()
    };
    let close = |a: f32, b: f32| (a - b).abs() <= 1e-9;
    for s in [&constant, &cosine] {
        // The update ending step k + 1 warms up linearly over 10 steps.
        assert!(close(s.learning_rate(0), 1e-4));
        assert!(close(s.learning_rate(4), 5e-4));
        assert!(close(s.learning_rate(9), 1e-3));
    }
    assert!(close(constant.learning_rate(109), 1e-3));
    assert!(close(constant.learning_rate(5000), 1e-3));
    // Half the rate halfway through the decay, none at its end and after.
    assert!(close(cosine.learning_rate(59), 5e-4));
    assert!(close(cosine.learning_rate(109), 0.0));
    assert!(close(cosine.learning_rate(200), 0.0));
    let rates: Vec<f32> = (9..110).map(|k| cosine.learning_rate(k)).collect();
    assert!(rates.windows(2).all(|w| w[1] < w[0]), "{rates:?}");
}

#[test]
fn tiny_nadb_restores_sr4_pool_better_than_the_input() {
    let dir = tempfile::tempdir().unwrap();
    write_scenes(&dir.path().join("train"), 6, 48, 0);
    write_scenes(&dir.path().join("val"), 2, 32, 100);
    let data = Arc::new(Dataset::open(&dir.path().join("train"), 16).unwrap());
    let tiny = UnetConfig::named("tiny").unwrap();

    let mean_path = dir.path().join("mean.safetensors");
    let mut mean = Trainer::new(settings(Role::Mean, None), &tiny).unwrap();
    mean.run(data.clone(), 300, &mean_path, 1000, |_| {})
        .unwrap();

    let nadb_path = dir.path().join("nadb.safetensors");
    let role = Role::Bridge(Method::Nadb);
    let mut bridge = Trainer::new(settings(role, Some(&mean_path)), &tiny).unwrap();
    bridge.run(data, 300, &nadb_path, 1000, |_| {}).unwrap();

    let restorer = Restorer::load(&nadb_path, None, Task::Sr4Pool).unwrap();
    let (mut before, mut after) = (0.0, 0.0);
    for i in 0..2 {
        let clean = load_image(&dir.path().join(format!("val/scene{i}.png"))).unwrap();
        let degraded = degrade(Task::Sr4Pool, &clean).unwrap();
        let restored = restorer.restore(&degraded, 5, 0).unwrap();
        // The same seed gives the same image.
        assert_eq!(restored, restorer.restore(&degraded, 5, 0).unwrap());
        before += psnr(&degraded, &clean)[0];
        after += psnr(&restored, &clean)[0];
    }
    assert!(
        after > before,
        "restored PSNR {:.2} dB vs input {:.2} dB",
        after / 2.0,
        before / 2.0
    );
}

#[test]
fn training_is_deterministic_and_resumes_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let data = scene_crops(dir.path(), 3, 7);
    let tiny = UnetConfig::named("tiny").unwrap();
    let role = Role::Bridge(Method::NadbNoMean);

    let straight = dir.path().join("straight.safetensors");
    let mut a = Trainer::new(settings(role, None), &tiny).unwrap();
    a.run(data.clone(), 6, &straight, 100, |_| {}).unwrap();

    let halves = dir.path().join("halves.safetensors");
    let mut b = Trainer::new(settings(role, None), &tiny).unwrap();
    b.run(data.clone(), 3, &halves, 100, |_| {}).unwrap();
    drop(b);
    let mut c = Trainer::resume(&halves).unwrap();
    assert_eq!(c.step, 3);
    c.run(data, 6, &halves, 100, |_| {}).unwrap();

    let (x, y) = (
        Checkpoint::open(&straight).unwrap(),
        Checkpoint::open(&halves).unwrap(),
    );
    assert_eq!(x.training, y.training);
    let specs = param_specs(&x.config).unwrap();
    for prefix in ["", EMA_PREFIX, ADAM_M_PREFIX, ADAM_V_PREFIX] {
        let (p, q) = (
            x.load_group(prefix, &specs).unwrap(),
            y.load_group(prefix, &specs).unwrap(),
        );
        assert!(p == q, "group '{prefix}' differs after resuming");
    }
}

#[test]
fn a_run_with_init_starts_from_that_networks_ema_weights() {
    let dir = tempfile::tempdir().unwrap();
    let data = scene_crops(dir.path(), 2, 3);
    let tiny = UnetConfig::named("tiny").unwrap();
    let role = Role::Bridge(Method::NadbNoMean);
    let first = dir.path().join("first.safetensors");
    let mut a = Trainer::new(settings(role, None), &tiny).unwrap();
    a.run(data.clone(), 3, &first, 100, |_| {}).unwrap();

    let tuned = RunSettings {
        init: Some(first.clone()),
        ..settings(role, None)
    };
    let mut b = Trainer::new(tuned.clone(), &tiny).unwrap();
    let ck = Checkpoint::open(&first).unwrap();
    let ema = ck
        .load_group(EMA_PREFIX, &param_specs(&ck.config).unwrap())
        .unwrap();
    assert_eq!(b.step, 0, "a fine-tune counts its own steps");
    for (p, e) in b.net.params().iter().zip(&ema) {
        assert!(
            p.data() == e.data(),
            "a weight is not the init's EMA weight"
        );
    }
    // The init is part of the run: recorded, so a resume checks it.
    let second = dir.path().join("second.safetensors");
    b.run(data, 1, &second, 100, |_| {}).unwrap();
    assert_eq!(Trainer::resume(&second).unwrap().settings, tuned);
}

fn nadb(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nadb"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_line_error((ok, err): (bool, String), expect: &str) {
    assert!(!ok, "succeeded; stderr: {err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(
        err.starts_with("error: ") && err.contains(expect),
        "'{expect}' not in: {err}"
    );
}

#[test]
fn bad_input_gives_one_line_errors_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    write_scenes(dir.path(), 1, 32, 3);
    std::fs::write(dir.path().join("notes.png"), b"this is not an image").unwrap();
    save_image(&dir.path().join("tiny.png"), &scene(3, 0), 0).unwrap();

    assert_one_line_error(
        nadb(&[
            "degrade",
            &d("missing.png"),
            "-o",
            &d("out"),
            "--task",
            "sr4-pool",
        ]),
        "missing.png",
    );
    assert_one_line_error(
        nadb(&[
            "degrade",
            &d("notes.png"),
            "-o",
            &d("out"),
            "--task",
            "sr4-pool",
        ]),
        "not a readable",
    );
    assert_one_line_error(
        nadb(&[
            "degrade",
            &d("tiny.png"),
            "-o",
            &d("out"),
            "--task",
            "jpeg10",
        ]),
        "3x3",
    );
    assert_one_line_error(
        nadb(&[
            "degrade",
            &d("scene0.png"),
            "-o",
            &d("out"),
            "--task",
            "sr3",
        ]),
        "unknown task 'sr3'",
    );

    // An existing output is kept unless --force; an input is never replaced.
    let (ok, err) = nadb(&[
        "degrade",
        &d("scene0.png"),
        "-o",
        &d("out"),
        "--task",
        "sr4-pool",
    ]);
    assert!(ok, "{err}");
    let first = std::fs::read(dir.path().join("out/scene0.png")).unwrap();
    assert_one_line_error(
        nadb(&[
            "degrade",
            &d("scene0.png"),
            "-o",
            &d("out"),
            "--task",
            "jpeg5",
        ]),
        "already exists",
    );
    assert_eq!(
        std::fs::read(dir.path().join("out/scene0.png")).unwrap(),
        first
    );
    let input = std::fs::read(dir.path().join("scene0.png")).unwrap();
    assert_one_line_error(
        nadb(&[
            "degrade",
            &d("scene0.png"),
            "-o",
            dir.path().to_str().unwrap(),
            "--task",
            "jpeg5",
            "--force",
        ]),
        "would replace an input",
    );
    assert_eq!(std::fs::read(dir.path().join("scene0.png")).unwrap(), input);

    // A checkpoint for another task.
    write_scenes(&dir.path().join("train"), 2, 32, 5);
    let data = Arc::new(Dataset::open(&dir.path().join("train"), 16).unwrap());
    let tiny = UnetConfig::named("tiny").unwrap();
    let ck = dir.path().join("nomean.safetensors");
    let mut t = Trainer::new(settings(Role::Bridge(Method::NadbNoMean), None), &tiny).unwrap();
    t.run(data, 1, &ck, 1, |_| {}).unwrap();
    let saved = std::fs::read(&ck).unwrap();
    assert_one_line_error(
        nadb(&[
            "restore",
            &d("scene0.png"),
            "-o",
            &d("restored"),
            "--task",
            "jpeg10",
            "--checkpoint",
            ck.to_str().unwrap(),
        ]),
        "trained for task sr4-pool, not jpeg10",
    );
    // Training onto an existing checkpoint without --resume is refused.
    assert_one_line_error(
        nadb(&[
            "train",
            "--method",
            "nadb-nomean",
            "--task",
            "sr4-pool",
            "--data",
            &d("train"),
            "-o",
            ck.to_str().unwrap(),
            "--config",
            "tiny",
        ]),
        "already exists",
    );
    assert_eq!(std::fs::read(&ck).unwrap(), saved);
    // An empty data folder.
    std::fs::create_dir_all(dir.path().join("empty")).unwrap();
    assert_one_line_error(
        nadb(&[
            "train-mean",
            "--task",
            "sr4-pool",
            "--data",
            &d("empty"),
            "-o",
            &d("m.safetensors"),
            "--config",
            "tiny",
        ]),
        "no PNG or JPEG images",
    );
}

#[test]
fn eval_and_diagnose_write_their_tables() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    write_scenes(&dir.path().join("train"), 2, 32, 11);
    write_scenes(&dir.path().join("val"), 2, 32, 21);
    let data = Arc::new(Dataset::open(&dir.path().join("train"), 16).unwrap());
    let tiny = UnetConfig::named("tiny").unwrap();
    for method in [Method::NadbNoMean, Method::I2sb] {
        let mut t = Trainer::new(settings(Role::Bridge(method), None), &tiny).unwrap();
        t.run(
            data.clone(),
            2,
            &dir.path().join(format!("{method}.safetensors")),
            10,
            |_| {},
        )
        .unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_nadb"))
        .args([
            "eval",
            "--data",
            &d("val"),
            "--task",
            "sr4-pool",
            "--methods",
            "input,nadb-nomean,i2sb",
        ])
        .args([
            "--nfe",
            "1,2",
            "--crop",
            "32",
            "--csv",
            &d("table.csv"),
            "--spread",
        ])
        .args([
            "--checkpoint",
            &format!("nadb-nomean={}", d("nadb-nomean.safetensors")),
        ])
        .args(["--checkpoint", &format!("i2sb={}", d("i2sb.safetensors"))])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(table.contains("Task sr4-pool, 2 images"), "{table}");
    for row in [
        "| input | - | - |",
        "| nadb-nomean | 1 | 0.375 |",
        "| nadb-nomean | 2 | 0.375 |",
        "| i2sb | 2 | - |",
    ] {
        assert!(table.contains(row), "no row '{row}' in:\n{table}");
    }
    let csv = std::fs::read_to_string(d("table.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 5, "{csv}");
    // The spread column: none for the input, infinite for one step (no
    // noise is drawn, so both seeds give the same image), finite for two
    // (the intermediate step draws noise).
    let spread = |method: &str, nfe: &str| -> String {
        let line = csv
            .lines()
            .find(|l| l.starts_with(&format!("sr4-pool,{method},{nfe},")))
            .unwrap_or_else(|| panic!("no {method} NFE '{nfe}' line in:\n{csv}"));
        line.rsplit(',').next().unwrap().to_string()
    };
    assert_eq!(spread("input", ""), "", "{csv}");
    assert_eq!(spread("nadb-nomean", "1"), "inf", "{csv}");
    for method in ["nadb-nomean", "i2sb"] {
        let db: f64 = spread(method, "2").parse().unwrap();
        assert!(
            db.is_finite() && db > 0.0,
            "{method}: spread {db} in:\n{csv}"
        );
    }
    assert!(table.contains("| spread (dB) |"), "{table}");

    let (ok, err) = nadb(&[
        "diagnose",
        "--data",
        &d("val"),
        "--task",
        "sr4-pool",
        "--crop",
        "16",
        "--batch",
        "2",
        "--checkpoint",
        &d("nadb-nomean.safetensors"),
        "--checkpoint",
        &d("i2sb.safetensors"),
        "-o",
        &d("diag"),
    ]);
    assert!(ok, "{err}");
    let rows = std::fs::read_to_string(d("diag.csv")).unwrap();
    let n = nadb::diagnose::probe_times().len();
    assert_eq!(rows.lines().count(), 1 + 2 * n, "{rows}");
    assert!(
        rows.contains("\nnadb-nomean,0.001,") && rows.contains("\ni2sb,1,"),
        "{rows}"
    );
    let plot = image::open(d("diag.png")).unwrap();
    assert_eq!((plot.width(), plot.height()), (1200, 500));
}

/// I2SB on a paper blur task trains and samples as an OT-ODE by default,
/// records it, and `nadb eval` says so; `--ot-ode=false` and the other
/// tasks do not; `--ot-ode` for a NADB method and an NFE of 1000 for I2SB
/// are one-line errors naming the flag.
#[test]
fn i2sb_on_the_paper_blurs_is_an_ot_ode_by_default_and_eval_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    write_scenes(&dir.path().join("train"), 2, 32, 31);
    write_scenes(&dir.path().join("val"), 1, 32, 41);
    let train = |method: &str, task: &str, out: &str, extra: &[&str]| {
        let mut args = vec![
            "train", "--method", method, "--task", task, "--data", "", "-o", "", "--config",
            "tiny", "--steps", "1", "--batch", "2", "--crop", "16",
        ];
        let (data, path) = (d("train"), d(out));
        args[6] = &data;
        args[8] = &path;
        args.extend_from_slice(extra);
        let (ok, err) = nadb(&args);
        assert!(ok, "{err}");
        nadb::train::load_inference_net(&dir.path().join(out))
            .unwrap()
            .1
            .unwrap()
            .settings
    };
    let blur = train("i2sb", "blur-uniform", "blur.safetensors", &[]);
    assert!(blur.i2sb_ot_ode);
    assert!(matches!(blur.bridge().unwrap(), nadb::bridge::Bridge::I2sb(s) if s.ot_ode));
    assert!(
        !train(
            "i2sb",
            "blur-uniform",
            "sde.safetensors",
            &["--ot-ode=false"]
        )
        .i2sb_ot_ode
    );
    assert!(!train("i2sb", "blur-uniform-sep", "sep.safetensors", &[]).i2sb_ot_ode);
    assert!(train("i2sb", "sr4-pool", "sr.safetensors", &["--ot-ode"]).i2sb_ot_ode);

    let eval = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_nadb"))
            .args(["eval", "--data", &d("val"), "--task", "blur-uniform"])
            .args(["--methods", "input,i2sb", "--nfe", "1", "--crop", "32"])
            .args(["--checkpoint", &format!("i2sb={}", d("blur.safetensors"))])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let table = eval(&[]);
    assert!(table.contains("| i2sb (OT-ODE) | 1 | - |"), "{table}");
    let table = eval(&["--ot-ode=false"]);
    assert!(table.contains("| i2sb | 1 | - |"), "{table}");
    let eval_error = |methods: &str, nfe: &str| {
        nadb(&[
            "eval",
            "--data",
            &d("val"),
            "--task",
            "blur-uniform",
            "--methods",
            methods,
            "--nfe",
            nfe,
            "--ot-ode",
        ])
    };
    assert_one_line_error(eval_error("input", "1"), "no i2sb row");
    assert_one_line_error(
        eval_error("input,i2sb", "5,1000"),
        "--nfe must be between 1 and 999 for I2SB, got 1000",
    );

    let nomean = dir.path().join("nomean.safetensors");
    let mut t = Trainer::new(
        settings(Role::Bridge(Method::NadbNoMean), None),
        &UnetConfig::named("tiny").unwrap(),
    )
    .unwrap();
    t.run(
        Arc::new(Dataset::open(&dir.path().join("train"), 16).unwrap()),
        1,
        &nomean,
        1,
        |_| {},
    )
    .unwrap();
    let scene = d("val/scene0.png");
    let restore = |ck: &str, task: &str, extra: &[&str]| {
        let mut args = vec![
            "restore",
            scene.as_str(),
            "-o",
            "",
            "--task",
            task,
            "--checkpoint",
            ck,
        ];
        let out = d("restored");
        args[3] = &out;
        args.extend_from_slice(extra);
        nadb(&args)
    };
    assert_one_line_error(
        restore(nomean.to_str().unwrap(), "sr4-pool", &["--ot-ode"]),
        "--ot-ode applies to the i2sb methods only, not nadb-nomean",
    );
    assert_one_line_error(
        restore(&d("blur.safetensors"), "blur-uniform", &["--nfe", "1000"]),
        "--nfe must be between 1 and 999 for I2SB, got 1000",
    );
    assert_one_line_error(
        nadb(&[
            "train",
            "--method",
            "nadb",
            "--task",
            "blur-gauss",
            "--data",
            &d("train"),
            "-o",
            &d("x.safetensors"),
            "--ot-ode",
        ]),
        "--ot-ode applies to the i2sb methods only, not nadb",
    );
}

//! Hostile and careless input at the command line: truncated and lying
//! image files, output names that clash, bad weights and bad flags are
//! refused before any work, with one line naming the file or flag, a
//! non-zero exit, and no file written or replaced.

use nadb::bridge::Method;
use nadb::data::Dataset;
use nadb::degrade::Task;
use nadb::imageio::save_image;
use nadb::nn::UnetConfig;
use nadb::train::{Role, RunSettings, Trainer};
use nadb::Tensor;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

/// A textured RGB image `[1, side, side, 3]`.
fn texture(side: usize, seed: usize) -> Tensor {
    let data = (0..side * side * 3)
        .map(|i| (((i * 7919 + seed * 104729) % 251) as f32 / 125.0 - 1.0) * 0.8)
        .collect();
    Tensor::from_vec(&[1, side, side, 3], data)
}

fn write_image(path: &Path, side: usize, seed: usize) -> Vec<u8> {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    save_image(path, &texture(side, seed), 0).unwrap();
    std::fs::read(path).unwrap()
}

fn nadb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nadb"))
        .args(args)
        .output()
        .unwrap()
}

/// Asserts a failure (exit 1) whose stderr is one `error:` line holding
/// every one of `expect`.
fn assert_error(out: &Output, expect: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert_last_error(out, expect);
}

/// Asserts a failure (exit 1) whose stderr ends in an `error:` line
/// holding every one of `expect` (restore names its device first).
fn assert_last_error(out: &Output, expect: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit code; stderr: {err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "{err}");
    for e in expect {
        assert!(last.contains(e), "'{e}' not in: {err}");
    }
}

/// A one-step `tiny` nadb-nomean bridge for sr4-pool.
fn checkpoint(dir: &Path) -> PathBuf {
    let data_dir = dir.join("ck-data");
    write_image(&data_dir.join("a.png"), 24, 0);
    let data = Arc::new(Dataset::open(&data_dir, 16).unwrap());
    let settings = RunSettings {
        batch: 2,
        crop: 16,
        warmup: 2,
        ..RunSettings::new(Role::Bridge(Method::NadbNoMean), Task::Sr4Pool)
    };
    let path = dir.join("nomean.safetensors");
    let mut t = Trainer::new(settings, &UnetConfig::named("tiny").unwrap()).unwrap();
    t.run(data, 1, &path, 1, |_| {}).unwrap();
    path
}

/// The offset of a JPEG's baseline SOF0 segment.
fn sof0(jpeg: &[u8]) -> usize {
    jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap()
}

/// PNG's chunk checksum (CRC-32, ISO 3309), to forge headers.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 == 1 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[test]
fn truncated_and_lying_images_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let jpeg = write_image(&dir.path().join("good.jpg"), 64, 1);
    let png = write_image(&dir.path().join("good.png"), 64, 2);
    // Cut in the scan data (the decoder alone fills the rest with grey),
    // and a PNG cut after its pixel data, before IEND.
    std::fs::write(d("cut.jpg"), &jpeg[..jpeg.len() * 2 / 3]).unwrap();
    std::fs::write(d("cut.png"), &png[..png.len() - 12]).unwrap();
    // A header that claims 8000x8000 over a few hundred bytes of data.
    let mut huge = jpeg.clone();
    let at = sof0(&huge) + 5;
    huge[at..at + 4].copy_from_slice(&[0x1F, 0x40, 0x1F, 0x40]);
    std::fs::write(d("huge.jpg"), &huge).unwrap();
    // A complete file whose scan data holds codes no Huffman table has
    // (the decoder alone would carry on with grey).
    let mut corrupt = jpeg.clone();
    let scan = jpeg.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap() + 20;
    // All ones (0xFF stuffed as FF 00): no code of the standard tables.
    for pair in corrupt[scan..scan + 16].chunks_mut(2) {
        pair.copy_from_slice(&[0xFF, 0x00]);
    }
    std::fs::write(d("corrupt.jpg"), &corrupt).unwrap();
    // A PNG header past the pixel budget (IHDR width and height).
    let mut wide = png.clone();
    wide[16..24].copy_from_slice(&[0, 0, 0x4E, 0x20, 0, 0, 0x4E, 0x20]);
    let crc = crc32(&wide[12..29]);
    wide[29..33].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(d("wide.png"), &wide).unwrap();
    let ck = checkpoint(dir.path());

    let cases = [
        ("cut.jpg", "truncated or corrupt"),
        ("cut.png", "truncated or corrupt"),
        ("huge.jpg", "header says 8000x8000, but"),
        ("corrupt.jpg", "corrupt JPEG data"),
        (
            "wide.png",
            "header says 20000x20000, more than the 100 megapixels",
        ),
    ];
    for (file, why) in cases {
        let start = std::time::Instant::now();
        let out = nadb(&["degrade", "--task", "sr4-pool", &d(file), "-o", &d("deg")]);
        assert_error(&out, &[&d(file), why]);
        let out = nadb(&[
            "restore",
            "--task",
            "sr4-pool",
            "--checkpoint",
            ck.to_str().unwrap(),
            &d(file),
            "-o",
            &d("res"),
        ]);
        assert_last_error(&out, &[&d(file), why]);
        assert!(
            start.elapsed().as_secs() < 20,
            "{file} took {:?}",
            start.elapsed()
        );
    }
    for out in ["deg", "res"] {
        let left = std::fs::read_dir(d(out)).map_or(0, |r| r.count());
        assert_eq!(left, 0, "{out} has files");
    }
    // Training skips the broken files by name; evaluation refuses them.
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::copy(d("cut.jpg"), data.join("cut.jpg")).unwrap();
    let out = nadb(&[
        "eval",
        "--data",
        data.to_str().unwrap(),
        "--task",
        "sr4-pool",
        "--methods",
        "input",
        "--crop",
        "16",
    ]);
    assert_last_error(&out, &["cut.jpg", "truncated or corrupt"]);
    let out = nadb(&[
        "train-mean",
        "--task",
        "sr4-pool",
        "--config",
        "tiny",
        "--crop",
        "16",
        "--data",
        data.to_str().unwrap(),
        "-o",
        &d("m.safetensors"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("warning: skipping ") && err.contains("cut.jpg: truncated or corrupt"),
        "{err}"
    );
    assert!(
        err.contains("none of its 1 image files is readable"),
        "{err}"
    );
    assert!(!dir.path().join("m.safetensors").exists());
}

#[test]
fn outputs_that_clash_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    write_image(&dir.path().join("a/x.png"), 20, 1);
    write_image(&dir.path().join("b/x.png"), 20, 2);
    write_image(&dir.path().join("a/x.jpg"), 20, 3);
    let ck = checkpoint(dir.path());
    let out = nadb(&[
        "restore",
        "--task",
        "sr4-pool",
        "--checkpoint",
        ck.to_str().unwrap(),
        &d("a/x.png"),
        &d("b/x.png"),
        &d("a/x.jpg"),
        "-o",
        &d("out"),
    ]);
    assert_error(
        &out,
        &[&format!(
            "{} and {} would both be written to {}: give them different names, or run them into separate -o folders",
            d("a/x.png"),
            d("b/x.png"),
            d("out/x.png")
        )],
    );
    assert!(!dir.path().join("out").exists(), "work started");
    // The same folder spelled two ways, without -o.
    let out = nadb(&[
        "restore",
        "--task",
        "sr4-pool",
        "--checkpoint",
        ck.to_str().unwrap(),
        &d("a/x.png"),
        &d("b/../a/x.png"),
    ]);
    assert_error(&out, &["would both be written to"]);
    assert!(!dir.path().join("a/x-restored.png").exists());
    // degrade keeps each input's format: x.png and x.jpg do not clash.
    let out = nadb(&[
        "degrade",
        "--task",
        "sr4-pool",
        &d("a/x.png"),
        &d("b/x.png"),
        "-o",
        &d("deg"),
    ]);
    assert_error(&out, &["would both be written to", &d("deg/x.png")]);
    assert!(!dir.path().join("deg").exists());
    let out = nadb(&[
        "degrade",
        "--task",
        "sr4-pool",
        &d("a/x.png"),
        &d("a/x.jpg"),
        "-o",
        &d("deg"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("deg/x.png").exists() && dir.path().join("deg/x.jpg").exists());
}

#[test]
fn two_runs_onto_one_new_output_cannot_both_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    write_image(&dir.path().join("in/x.png"), 64, 1);
    let ck = checkpoint(dir.path());
    let run = |seed: &str| {
        Command::new(env!("CARGO_BIN_EXE_nadb"))
            .args([
                "restore", "--task", "sr4-pool", "--nfe", "2", "--seed", seed,
            ])
            .args([
                "--checkpoint",
                ck.to_str().unwrap(),
                &d("in/x.png"),
                "-o",
                &d("out"),
            ])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let children = [run("1"), run("2")];
    let outs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let won: Vec<bool> = outs.iter().map(|o| o.status.success()).collect();
    assert_eq!(won.iter().filter(|&&w| w).count(), 1, "{won:?}");
    let lost = &outs[won.iter().position(|&w| !w).unwrap()];
    assert_last_error(lost, &[&d("out/x.png"), "already exists"]);
    nadb::imageio::load_image(&dir.path().join("out/x.png")).unwrap();
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(d("out")).unwrap().count(), 1);
}

#[test]
fn a_no_replace_write_keeps_the_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mine.txt");
    std::fs::write(&path, b"the user's").unwrap();
    let err = nadb::atomic::write_file(&path, b"new", false).unwrap_err();
    assert_eq!(
        err.0,
        format!(
            "{}: already exists (made while this ran?); nothing was replaced",
            path.display()
        )
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"the user's");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    nadb::atomic::write_file(&path, b"new", true).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"new");
}

#[test]
fn degrade_goes_on_past_bad_files_and_lists_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    write_image(&dir.path().join("in/a.png"), 20, 1);
    write_image(&dir.path().join("in/c.png"), 20, 2);
    std::fs::write(d("in/b.png"), b"not a picture").unwrap();
    let out = nadb(&[
        "degrade",
        "--task",
        "sr4-pool",
        &d("in/a.png"),
        &d("in/b.png"),
        &d("in/c.png"),
        "-o",
        &d("out"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err,
        format!(
            "failed: {}: not a readable PNG or JPEG image (neither signature)\n\
             error: 1 of 3 images could not be degraded (listed above)\n",
            d("in/b.png")
        )
    );
    assert!(dir.path().join("out/a.png").exists() && dir.path().join("out/c.png").exists());
    assert!(!dir.path().join("out/b.png").exists());
}

#[test]
fn non_finite_weights_are_refused_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let ck = checkpoint(dir.path());
    write_image(&dir.path().join("in/x.png"), 20, 1);
    write_image(&dir.path().join("val/v.png"), 20, 2);
    let mut t = Trainer::resume(&ck).unwrap();
    let specs = t.net.specs().to_vec();
    t.ema.weights[3].data_mut()[5] = f32::INFINITY;
    let poisoned_ema = dir.path().join("ema.safetensors");
    t.save(&poisoned_ema).unwrap();
    t.ema.weights[3].data_mut()[5] = 0.0;
    t.net.params_mut().next().unwrap().data_mut()[0] = f32::NAN;
    let poisoned = dir.path().join("raw.safetensors");
    t.save(&poisoned).unwrap();
    let ema_error = format!(
        "checkpoint {}: tensor 'ema.{}' holds inf at index 5 (the weights are broken)",
        poisoned_ema.display(),
        specs[3].name
    );
    let raw_error = format!(
        "checkpoint {}: tensor '{}' holds NaN at index 0 (the weights are broken)",
        poisoned.display(),
        specs[0].name
    );

    let out = nadb(&["info", poisoned_ema.to_str().unwrap()]);
    assert_error(&out, &[&ema_error]);
    assert!(out.stdout.is_empty(), "info printed before checking");
    assert_error(&nadb(&["info", poisoned.to_str().unwrap()]), &[&raw_error]);
    let out = nadb(&[
        "restore",
        "--task",
        "sr4-pool",
        "--checkpoint",
        poisoned_ema.to_str().unwrap(),
        &d("in/x.png"),
        "-o",
        &d("out"),
    ]);
    assert_error(&out, &[&ema_error]);
    assert!(!dir.path().join("out/x.png").exists());
    let out = nadb(&[
        "eval",
        "--data",
        &d("val"),
        "--task",
        "sr4-pool",
        "--methods",
        "input,nadb-nomean",
        "--nfe",
        "1",
        "--crop",
        "16",
        "--checkpoint",
        &format!("nadb-nomean={}", poisoned_ema.display()),
    ]);
    assert_last_error(&out, &[&ema_error]);
    // Resuming the run whose raw weights are broken.
    let before = std::fs::read(&poisoned).unwrap();
    let out = nadb(&[
        "train",
        "--method",
        "nadb-nomean",
        "--task",
        "sr4-pool",
        "--config",
        "tiny",
        "--data",
        &d("ck-data"),
        "--crop",
        "16",
        "--batch",
        "2",
        "--warmup",
        "2",
        "--steps",
        "3",
        "-o",
        poisoned.to_str().unwrap(),
        "--resume",
    ]);
    assert_error(&out, &[&raw_error]);
    assert_eq!(std::fs::read(&poisoned).unwrap(), before);
}

/// `train` on a small data folder with `extra` flags.
fn train(dir: &Path, out: &str, extra: &[&str]) -> Output {
    let data = dir.join("data");
    if !data.exists() {
        write_image(&data.join("a.png"), 24, 0);
    }
    train_command(&data, Path::new(out))
        .args(extra)
        .output()
        .unwrap()
}

/// `nadb train` of a `tiny` nadb-nomean bridge for sr4-pool on `data`,
/// into `out`; the caller adds the rest.
fn train_command(data: &Path, out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nadb"));
    c.args(["train", "--method", "nadb-nomean", "--task", "sr4-pool"])
        .args(["--config", "tiny", "--data", data.to_str().unwrap()])
        .args(["-o", out.to_str().unwrap()]);
    c
}

#[test]
fn bad_training_flags_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.safetensors");
    let o = out.to_str().unwrap();
    let cases: [(&[&str], &str); 12] = [
        (
            &["--ema", "2"],
            "--ema 2: the EMA decay must be in [0, 1) (0.999 is usual)",
        ),
        (&["--ema", "1"], "--ema 1: the EMA decay must be in [0, 1)"),
        (
            &["--ema=-0.5"],
            "--ema -0.5: the EMA decay must be in [0, 1)",
        ),
        (
            &["--lr", "0"],
            "--lr 0: the learning rate must be positive and finite",
        ),
        (
            &["--lr", "NaN"],
            "--lr NaN: the learning rate must be positive and finite",
        ),
        (
            &["--batch", "0"],
            "--batch 0: a batch needs at least one image",
        ),
        (
            &["--crop", "7"],
            "--crop 7: config 'tiny' needs a multiple of 2 (nearest: 6 or 8)",
        ),
        (
            &["--crop", "1"],
            "--crop 1: config 'tiny' needs a multiple of 2 (nearest: 2)",
        ),
        (
            &["--minutes=-1"],
            "--minutes must be a positive number of minutes",
        ),
        (
            &["--mean-checkpoint", "mean.safetensors"],
            "--mean-checkpoint mean.safetensors: method nadb-nomean uses no mean network",
        ),
        (
            &["--lr-schedule", "linear"],
            "--lr-schedule linear: unknown schedule (constant or cosine)",
        ),
        (
            &["--lr-schedule", "cosine", "--steps", "400"],
            "--lr-schedule cosine: --steps 400 must exceed --warmup 500",
        ),
    ];
    for (flags, message) in cases {
        assert_error(&train(dir.path(), o, flags), &[message]);
        assert!(!out.exists(), "{flags:?} wrote a checkpoint");
    }
    // The mean network's trainer checks the same settings.
    let mean = Command::new(env!("CARGO_BIN_EXE_nadb"))
        .args([
            "train-mean",
            "--task",
            "sr4-pool",
            "--config",
            "tiny",
            "--batch",
            "0",
        ])
        .args(["--data", dir.path().join("data").to_str().unwrap(), "-o", o])
        .output()
        .unwrap();
    assert_error(&mean, &["--batch 0: a batch needs at least one image"]);
    // --init must hold the run's network: its config, bridge or mean.
    let shipped = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/weights/sr4-bicubic-nadb.safetensors"
    );
    let wrong_config = train(dir.path(), o, &["--init", shipped]);
    assert_error(
        &wrong_config,
        &[&format!(
            "--init {shipped}: is a 'small' bridge network, not a 'tiny' bridge network"
        )],
    );
    let bridge = checkpoint(dir.path());
    let init = bridge.to_str().unwrap();
    let missing = train(dir.path(), o, &["--init", "nothing.safetensors"]);
    assert_error(
        &missing,
        &["--init: checkpoint nothing.safetensors: cannot open"],
    );
    let bridge_into_mean = Command::new(env!("CARGO_BIN_EXE_nadb"))
        .args(["train-mean", "--task", "sr4-pool", "--config", "tiny"])
        .args(["--init", init])
        .args(["--data", dir.path().join("data").to_str().unwrap(), "-o", o])
        .output()
        .unwrap();
    assert_error(
        &bridge_into_mean,
        &["is a 'tiny' bridge network, not a 'tiny' mean network"],
    );
    assert!(!out.exists(), "a refused --init wrote a checkpoint");
    // A folder for -o that does not exist is found before training, not
    // at the first save.
    let missing = dir.path().join("missing_dir/x.safetensors");
    let start = std::time::Instant::now();
    let r = train(
        dir.path(),
        missing.to_str().unwrap(),
        &["--steps", "100000"],
    );
    assert_error(
        &r,
        &[&format!(
            "-o {}: the folder {} does not exist",
            missing.display(),
            dir.path().join("missing_dir").display()
        )],
    );
    assert!(start.elapsed().as_secs() < 20);
    let r = train(dir.path(), dir.path().to_str().unwrap(), &[]);
    assert_error(&r, &["is a folder; give a file name"]);
}

#[test]
fn tables_and_plots_are_not_replaced_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let ck = checkpoint(dir.path());
    write_image(&dir.path().join("val/v.png"), 20, 2);
    for (name, bytes) in [("table.csv", "mine"), ("diag.png", "mine too")] {
        std::fs::write(d(name), bytes).unwrap();
    }
    let (val, csv) = (d("val"), d("table.csv"));
    let eval = |extra: &[&str]| {
        let mut args = vec![
            "eval",
            "--data",
            &val,
            "--task",
            "sr4-pool",
            "--methods",
            "input",
            "--crop",
            "16",
            "--csv",
            &csv,
        ];
        args.extend_from_slice(extra);
        nadb(&args)
    };
    assert_error(
        &eval(&[]),
        &[&format!(
            "--csv {}: already exists (pass --force to replace it)",
            d("table.csv")
        )],
    );
    assert_eq!(std::fs::read_to_string(d("table.csv")).unwrap(), "mine");
    let forced = eval(&["--force"]);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert!(std::fs::read_to_string(d("table.csv"))
        .unwrap()
        .starts_with("task,"));
    let missing = d("nowhere/table.csv");
    let out = nadb(&[
        "eval",
        "--data",
        &d("val"),
        "--task",
        "sr4-pool",
        "--methods",
        "input",
        "--csv",
        &missing,
    ]);
    assert_error(&out, &["--csv", "nowhere does not exist"]);

    let out = nadb(&[
        "diagnose",
        "--data",
        &d("val"),
        "--task",
        "sr4-pool",
        "--crop",
        "16",
        "--batch",
        "1",
        "--checkpoint",
        ck.to_str().unwrap(),
        "-o",
        &d("diag"),
    ]);
    assert_error(
        &out,
        &[&format!(
            "-o {}: already exists (pass --force to replace it)",
            d("diag.png")
        )],
    );
    assert_eq!(std::fs::read_to_string(d("diag.png")).unwrap(), "mine too");
    assert!(!dir.path().join("diag.csv").exists());
}

#[test]
fn misleading_messages_now_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let ck = checkpoint(dir.path());
    write_image(&dir.path().join("in/x.png"), 20, 1);
    assert_error(
        &nadb(&["info", dir.path().to_str().unwrap()]),
        &[&format!(
            "checkpoint {}: is a folder, not a checkpoint file",
            dir.path().display()
        )],
    );
    std::fs::write(d("a-file"), b"").unwrap();
    let restore = |extra: &[&str]| {
        let mut args = vec![
            "restore",
            "--task",
            "sr4-pool",
            "--checkpoint",
            ck.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        nadb(&args)
    };
    let x = d("in/x.png");
    assert_error(
        &restore(&[&x, "-o", &d("a-file")]),
        &[&format!(
            "{}: is a file; -o names the output folder",
            d("a-file")
        )],
    );
    // The NFE is the flag's fault, found before any work, not an output's.
    assert_error(
        &restore(&[&x, "-o", &d("out"), "--nfe", "0"]),
        &["error: --nfe must be between 1 and 1000 for NADB, got 0"],
    );
    assert!(!dir.path().join("out/x.png").exists());
    let help = Command::new(env!("CARGO_BIN_EXE_nadb"))
        .args(["restore", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains(&format!(
            "The degradation: {}",
            nadb::degrade::TASK_NAMES.join(", ")
        )),
        "{help}"
    );
}

#[test]
fn shipped_weights_are_found_from_any_folder_and_a_miss_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    write_image(&dir.path().join("x.png"), 20, 1);
    let restore = |task: &str, weights: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_nadb"));
        c.current_dir(dir.path()).env_remove("NADB_WEIGHTS");
        if let Some(w) = weights {
            c.env("NADB_WEIGHTS", w);
        }
        // NFE 0 is refused right after the networks load: no restoring.
        c.args([
            "restore",
            "--task",
            task,
            "--nfe",
            "0",
            &d("x.png"),
            "-o",
            &d("out"),
        ])
        .output()
        .unwrap()
    };
    // From a folder without weights/: the crate's own, and the mean
    // network it recorded as weights/... found beside it.
    assert_error(
        &restore("sr4-bicubic", None),
        &["--nfe must be between 1 and 1000 for NADB, got 0"],
    );
    // NADB_WEIGHTS comes before the crate's folder.
    std::fs::create_dir_all(d("w")).unwrap();
    std::fs::write(d("w/sr4-bicubic-nadb.safetensors"), b"junk").unwrap();
    assert_error(
        &restore("sr4-bicubic", Some(&d("w"))),
        &[&format!(
            "checkpoint {}: truncated",
            d("w/sr4-bicubic-nadb.safetensors")
        )],
    );
    let exe_dir = Path::new(env!("CARGO_BIN_EXE_nadb")).parent().unwrap();
    assert_error(
        &restore("jpeg5", Some(&d("w"))),
        &[&format!(
            "no shipped weights jpeg5-nadb.safetensors: looked in weights (the current folder), \
             {} (NADB_WEIGHTS), {} (beside the executable), {} (the crate's folder); \
             pass --checkpoint, or set NADB_WEIGHTS to the folder that holds them",
            d("w"),
            exe_dir.join("weights").display(),
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("weights")
                .display()
        )],
    );
}

/// The step a training checkpoint holds.
fn step_of(path: &Path) -> u64 {
    let ck = nadb::checkpoint::Checkpoint::open(path).unwrap();
    let v: serde_json::Value = serde_json::from_str(ck.training.as_deref().unwrap()).unwrap();
    v["step"].as_u64().unwrap()
}

/// Sends SIGINT to a running child (what Ctrl-C sends).
fn send_sigint(child: &std::process::Child) {
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// Starts a long `train` run, waits for its first logged step, then sends
/// `signals` SIGINTs back to back; returns its output.
fn interrupted_train(dir: &Path, out: &Path, signals: usize) -> Output {
    use std::io::{BufRead, BufReader};
    let data = dir.join("data");
    write_image(&data.join("a.png"), 64, 0);
    // Steps long enough (batch 8 of 64x64) that two signals sent back to
    // back land within one.
    let mut child = train_command(&data, out)
        .args(["--crop", "64", "--batch", "8"])
        .args([
            "--steps",
            "100000",
            "--save-every",
            "100000",
            "--log-every",
            "1",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("step 2/") {
        assert!(
            stderr.read_line(&mut seen).unwrap() > 0,
            "ended early: {seen}"
        );
    }
    for i in 0..signals {
        send_sigint(&child);
        // Two signals sent back to back may arrive as one: send the next
        // only once the first was taken.
        while i + 1 < signals && !seen.contains("interrupted: saving") {
            assert!(
                stderr.read_line(&mut seen).unwrap() > 0,
                "ended early: {seen}"
            );
        }
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    Output {
        status,
        stdout: Vec::new(),
        stderr: (seen + &rest).into_bytes(),
    }
}

#[test]
fn ctrl_c_in_train_saves_the_current_step_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.safetensors");
    let r = interrupted_train(dir.path(), &out, 1);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(130), "{err}");
    // No periodic save was due: the checkpoint is the interrupt's, at the
    // step it names, past the step logged before the signal.
    let step = step_of(&out);
    assert!(step >= 2, "{step}");
    let last = err.lines().last().unwrap();
    assert_eq!(
        last,
        format!(
            "interrupted: saved {} at step {step} (continue with --resume)",
            out.display()
        )
    );
    // It resumes from there.
    let resumed = train_command(&dir.path().join("data"), &out)
        .args(["--crop", "64", "--batch", "8"])
        .args(["--steps", &(step + 1).to_string(), "--resume"])
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(step_of(&out), step + 1);
}

#[test]
fn a_second_ctrl_c_in_train_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.safetensors");
    let r = interrupted_train(dir.path(), &out, 2);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(130), "{err}");
    assert!(!err.contains("interrupted: saved"), "{err}");
    // Whether or not the first one's save got in, what is there is whole.
    if out.exists() {
        assert!(step_of(&out) >= 2);
    }
}

/// A JPEG of a 32x16 picture whose left quarter is white, with an EXIF
/// block saying "rotate 90 degrees clockwise to view" (orientation 6).
fn jpeg_with_orientation_6(path: &Path) {
    let img = image::RgbImage::from_fn(32, 16, |x, _| {
        image::Rgb(if x < 8 { [255; 3] } else { [0; 3] })
    });
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
        .encode_image(&img)
        .unwrap();
    let mut app1 = vec![0xFF, 0xE1, 0, 34];
    app1.extend_from_slice(b"Exif\0\0MM\0\x2a\0\0\0\x08");
    app1.extend_from_slice(&[0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0]);
    jpeg.splice(2..2, app1);
    std::fs::write(path, jpeg).unwrap();
}

#[test]
fn exif_orientation_is_applied_and_said() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    jpeg_with_orientation_6(&dir.path().join("side.jpg"));
    let p = nadb::imageio::load_picture(&dir.path().join("side.jpg")).unwrap();
    // Upright: 16 wide, 32 high, the white quarter now on top.
    assert_eq!(p.pixels.shape(), &[1, 32, 16, 3]);
    let row_mean = |y: usize| p.pixels.data()[y * 48..][..48].iter().sum::<f32>() / 48.0;
    assert!(
        row_mean(2) > 0.9 && row_mean(29) < -0.9,
        "{} {}",
        row_mean(2),
        row_mean(29)
    );
    assert_eq!(p.notes, ["EXIF orientation Rotate90 applied"]);
    let out = nadb(&[
        "degrade",
        "--task",
        "sr4-pool",
        &d("side.jpg"),
        "-o",
        &d("out"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("{}: EXIF orientation Rotate90 applied\n", d("side.jpg"))
    );
    let written = image::open(d("out/side.jpg")).unwrap();
    assert_eq!((written.width(), written.height()), (16, 32));
}

#[test]
fn grey_sixteen_bit_and_alpha_are_written_back_as_they_came() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    std::fs::create_dir_all(d("in")).unwrap();
    image::GrayImage::from_fn(20, 20, |x, y| image::Luma([(x * 12 + y) as u8]))
        .save(d("in/grey.png"))
        .unwrap();
    let deep = image::ImageBuffer::<image::Rgb<u16>, _>::from_fn(20, 20, |x, y| {
        image::Rgb([(x * 3000 + 7) as u16, (y * 3000 + 1) as u16, 40_001])
    });
    deep.save(d("in/deep.png")).unwrap();
    let see_through = image::RgbaImage::from_fn(20, 20, |x, y| {
        image::Rgba([(x * 10) as u8, (y * 10) as u8, 90, (x * 12 + y) as u8])
    });
    see_through.save(d("in/alpha.png")).unwrap();

    // 16 bits are read at full precision.
    let p = nadb::imageio::load_picture(Path::new(&d("in/deep.png"))).unwrap();
    assert_eq!(p.pixels.data()[3], 3007.0 / 32767.5 - 1.0);
    assert!(p.layout.sixteen && !p.layout.grey && p.layout.alpha.is_none());

    let ck = checkpoint(dir.path());
    let restore = |extra: &[&str]| {
        let mut args = vec![
            "restore",
            "--task",
            "sr4-pool",
            "--nfe",
            "1",
            "--checkpoint",
            ck.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        nadb(&args)
    };
    let (grey, deep_in, alpha) = (d("in/grey.png"), d("in/deep.png"), d("in/alpha.png"));
    let out = restore(&[&grey, &deep_in, &alpha, "-o", &d("out")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    for (file, note) in [
        (&grey, "greyscale: restored as RGB, written back as grey"),
        (
            &deep_in,
            "16-bit: read at full precision, written back as 16-bit PNG",
        ),
        (&alpha, "alpha channel carried through unchanged"),
    ] {
        assert!(err.contains(&format!("{file}: {note}\n")), "{err}");
    }
    let grey_out = image::open(d("out/grey.png")).unwrap();
    assert_eq!(grey_out.color(), image::ColorType::L8);
    assert_eq!(
        image::open(d("out/deep.png")).unwrap().color(),
        image::ColorType::Rgb16
    );
    let alpha_out = image::open(d("out/alpha.png")).unwrap();
    assert_eq!(alpha_out.color(), image::ColorType::Rgba8);
    let alphas = |img: &image::RgbaImage| img.pixels().map(|p| p.0[3]).collect::<Vec<u8>>();
    assert_eq!(alphas(&alpha_out.to_rgba8()), alphas(&see_through));

    // JPEG cannot hold alpha: refused before any work, naming the file.
    let out = restore(&[&alpha, "-o", &d("jpg"), "--format", "jpg"]);
    assert_last_error(
        &out,
        &[&format!(
            "{alpha}: has an alpha channel, which a JPEG ({}) cannot hold: write PNG (--format png)",
            d("jpg/alpha.jpg")
        )],
    );
    assert!(!dir.path().join("jpg/alpha.jpg").exists());
}

#[test]
fn a_long_restoration_prints_progress_lines() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    write_image(&dir.path().join("in/big.png"), 320, 1);
    let ck = checkpoint(dir.path());
    // A memory budget that tiles the image, and enough evaluations to take
    // well over the few seconds before the first line.
    let start = std::time::Instant::now();
    let out = nadb(&[
        "restore",
        "--task",
        "sr4-pool",
        "--nfe",
        "2",
        "--max-memory",
        "60",
        "--checkpoint",
        ck.to_str().unwrap(),
        &d("in/big.png"),
        "-o",
        &d("out"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("restoring "))
        .collect();
    assert!(
        !lines.is_empty(),
        "no progress after {:?}: {err}",
        start.elapsed()
    );
    let tiles: Vec<(usize, usize)> = lines
        .iter()
        .map(|l| {
            let rest = l.strip_prefix("restoring image 1 of 1, tile ").expect(l);
            let (j, m) = rest.split_once(" of ").expect(l);
            (j.parse().unwrap(), m.parse().unwrap())
        })
        .collect();
    let m = tiles[0].1;
    assert!(m > 1, "{err}");
    assert!(
        tiles.windows(2).all(|p| p[0].0 < p[1].0) && tiles.iter().all(|&(j, n)| j <= m && n == m),
        "{err}"
    );
}

#[test]
fn bench_and_forward_outputs_are_not_replaced_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    std::fs::write(d("mine.md"), "mine").unwrap();
    let bench = |extra: &[&str]| {
        let mut args = vec![
            "bench",
            "--config",
            "tiny",
            "--size",
            "16",
            "--nfe",
            "1",
            "--batch",
            "1",
            "--train-batch",
            "1",
            "--train-size",
            "16",
            "--iters",
            "1",
        ];
        args.extend_from_slice(extra);
        nadb(&args)
    };
    let exists = format!(
        "{}: already exists (pass --force to replace it)",
        d("mine.md")
    );
    assert_error(&bench(&["-o", &d("mine.md")]), &[&format!("-o {exists}")]);
    assert_error(
        &bench(&["--profile", "--trace", &d("mine.md")]),
        &[&format!("--trace {exists}")],
    );
    assert_eq!(std::fs::read_to_string(d("mine.md")).unwrap(), "mine");
    let forward = nadb(&[
        "forward",
        "--checkpoint",
        &d("nowhere.safetensors"),
        "--input",
        &d("nowhere-either.safetensors"),
        "-o",
        &d("mine.md"),
    ]);
    assert_error(&forward, &[&format!("-o {exists}")]);
    assert_eq!(std::fs::read_to_string(d("mine.md")).unwrap(), "mine");
}

#[test]
fn a_new_training_run_does_not_replace_a_checkpoint_made_meanwhile() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_image(&data.join("a.png"), 24, 0);
    let out = dir.path().join("run.safetensors");
    // A run that saves only when it is stopped: a SIGINT sent after the
    // file appears (a time budget would race with a slow, loaded machine).
    let mut child = train_command(&data, &out)
        .args(["--crop", "16", "--batch", "2"])
        .args([
            "--steps",
            "100000000",
            "--save-every",
            "100000000",
            "--log-every",
            "1",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("step 2/") {
        assert!(
            stderr.read_line(&mut seen).unwrap() > 0,
            "ended early: {seen}"
        );
    }
    std::fs::write(&out, "another run's").unwrap();
    send_sigint(&child);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(1), "{rest}");
    let last = rest.lines().last().unwrap();
    assert_eq!(
        last,
        format!(
            "error: {}: already exists (made while this ran?); nothing was replaced",
            out.display()
        )
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "another run's");
}

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
            "{}: already exists (made while this ran?); pass --force to replace it",
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

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

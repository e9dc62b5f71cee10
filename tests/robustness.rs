//! Robustness: numerical faults stop training without touching the last
//! good checkpoint, a training process killed at any moment resumes to the
//! same weights as an uninterrupted run, a folder with bad files restores
//! the good ones, and the checkpoint and image loaders survive fuzzing.

use nadb::bridge::Method;
use nadb::checkpoint::{self, Checkpoint, ADAM_M_PREFIX, ADAM_V_PREFIX, EMA_PREFIX};
use nadb::data::Dataset;
use nadb::degrade::Task;
use nadb::imageio::{load_image, save_image};
use nadb::nn::{param_specs, Unet, UnetConfig};
use nadb::train::{Role, RunSettings, Trainer};
use nadb::Tensor;
use proptest::prelude::*;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A textured RGB image `[1, side, side, 3]`.
fn texture(side: usize, seed: usize) -> Tensor {
    let data = (0..side * side * 3)
        .map(|i| (((i * 7919 + seed * 104729) % 251) as f32 / 125.0 - 1.0) * 0.8)
        .collect();
    Tensor::from_vec(&[1, side, side, 3], data)
}

fn write_textures(dir: &Path, count: usize, side: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..count {
        save_image(&dir.join(format!("t{i}.png")), &texture(side, i), 0).unwrap();
    }
}

fn settings() -> RunSettings {
    RunSettings {
        batch: 2,
        crop: 16,
        warmup: 2,
        ..RunSettings::new(Role::Bridge(Method::NadbNoMean), Task::Sr4Pool)
    }
}

#[test]
fn a_nan_stops_training_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    write_textures(&dir.path().join("data"), 2, 24);
    let data = Arc::new(Dataset::open(&dir.path().join("data"), 16).unwrap());
    let tiny = UnetConfig::named("tiny").unwrap();
    let path = dir.path().join("run.safetensors");
    let mut t = Trainer::new(settings(), &tiny).unwrap();
    t.run(data.clone(), 2, &path, 1, |_| {}).unwrap();
    let good = std::fs::read(&path).unwrap();

    // A NaN in the first convolution's weight poisons everything after it.
    let first_conv = t
        .net
        .specs()
        .iter()
        .position(|s| s.name == "input_blocks.0.0.weight")
        .unwrap();
    t.net.params_mut().nth(first_conv).unwrap().data_mut()[0] = f32::NAN;
    let err = t.run(data.clone(), 4, &path, 1, |_| {}).unwrap_err();
    assert!(err.0.contains("step 3: the loss is NaN"), "{err}");
    assert!(err.0.contains("is kept"), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        good,
        "the last good checkpoint changed"
    );

    // With anomaly detection the first op that made it is named.
    t.detect_anomaly = true;
    let err = t.run(data, 4, &path, 1, |_| {}).unwrap_err();
    assert!(
        err.0.contains("step 3: conv2d produced a non-finite value"),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), good);
}

fn train_args<'a>(data: &'a str, out: &'a str, steps: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--method",
        "nadb-nomean",
        "--task",
        "sr4-pool",
        "--config",
        "tiny",
        "--data",
        data,
        "--crop",
        "16",
        "--batch",
        "2",
        "--warmup",
        "2",
        "--steps",
        steps,
        "--save-every",
        "1",
        "-o",
        out,
    ]
}

fn step_of(path: &Path) -> Option<u64> {
    let ck = Checkpoint::open(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(ck.training.as_deref()?).ok()?;
    v["step"].as_u64()
}

fn groups_equal(a: &Path, b: &Path) {
    let (x, y) = (Checkpoint::open(a).unwrap(), Checkpoint::open(b).unwrap());
    let specs = param_specs(&x.config).unwrap();
    for prefix in ["", EMA_PREFIX, ADAM_M_PREFIX, ADAM_V_PREFIX] {
        let same = x.load_group(prefix, &specs).unwrap() == y.load_group(prefix, &specs).unwrap();
        assert!(
            same,
            "group '{prefix}' of {} differs from {}",
            b.display(),
            a.display()
        );
    }
}

#[test]
fn training_killed_at_any_moment_resumes_to_the_uninterrupted_weights() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    write_textures(&dir.path().join("data"), 3, 24);
    let nadb = env!("CARGO_BIN_EXE_nadb");
    let total = "12";
    let ok = Command::new(nadb)
        .args(train_args(&d("data"), &d("straight.safetensors"), total))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    // Kill the run (SIGKILL) at several moments: with a checkpoint written
    // every step, many kills land inside a save.
    let killed = dir.path().join("killed.safetensors");
    let data = d("data");
    for (round, extra_ms) in [(3u64, 0u64), (6, 7), (9, 23)].into_iter() {
        let args = if killed.exists() {
            let mut a = train_args(&data, killed.to_str().unwrap(), total);
            a.push("--resume");
            a
        } else {
            train_args(&data, killed.to_str().unwrap(), total)
        };
        let mut child = Command::new(nadb)
            .args(&args)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while step_of(&killed).is_none_or(|s| s < round)
            && start.elapsed() < Duration::from_secs(120)
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(extra_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        // Whatever moment it died at, the checkpoint opens and is complete.
        let ck = Checkpoint::open(&killed).expect("the last checkpoint must stay loadable");
        ck.load_group(EMA_PREFIX, &param_specs(&ck.config).unwrap())
            .unwrap();
    }
    let mut args = train_args(&data, killed.to_str().unwrap(), total);
    args.push("--resume");
    let done = Command::new(nadb).args(&args).output().unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(step_of(&killed), Some(12));
    groups_equal(&dir.path().join("straight.safetensors"), &killed);
}

#[test]
fn a_folder_with_bad_files_restores_the_good_ones_and_lists_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    write_textures(&dir.path().join("data"), 2, 24);
    let data = Arc::new(Dataset::open(&dir.path().join("data"), 16).unwrap());
    let ck = dir.path().join("nomean.safetensors");
    let mut t = Trainer::new(settings(), &UnetConfig::named("tiny").unwrap()).unwrap();
    t.run(data, 1, &ck, 1, |_| {}).unwrap();

    let inputs = dir.path().join("in");
    write_textures(&inputs, 3, 20);
    let whole = std::fs::read(inputs.join("t2.png")).unwrap();
    std::fs::write(inputs.join("truncated.png"), &whole[..whole.len() / 2]).unwrap();
    std::fs::write(inputs.join("notes.jpg"), b"plain text, not a picture").unwrap();
    let files =
        ["t0.png", "truncated.png", "t1.png", "notes.jpg", "t2.png"].map(|f| d(&format!("in/{f}")));
    let out = Command::new(env!("CARGO_BIN_EXE_nadb"))
        .args([
            "restore",
            "--task",
            "sr4-pool",
            "--nfe",
            "2",
            "--batch",
            "2",
            "-o",
            &d("out"),
        ])
        .args(["--checkpoint", ck.to_str().unwrap()])
        .args(files)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "exit code must say some failed: {err}"
    );
    for good in ["t0", "t1", "t2"] {
        let restored = load_image(&dir.path().join(format!("out/{good}.png"))).unwrap();
        assert_eq!(restored.shape(), &[1, 20, 20, 3]);
    }
    assert!(
        err.contains("failed: ") && err.contains("truncated.png") && err.contains("notes.jpg"),
        "{err}"
    );
    assert!(
        err.trim_end()
            .ends_with("error: 2 of 5 images could not be restored (listed above)"),
        "{err}"
    );
    assert!(
        !dir.path().join("out/truncated.png").exists()
            && !dir.path().join("out/notes.png").exists()
    );
}

/// A network small enough that a fuzz case costs microseconds.
fn micro() -> Unet {
    let cfg = UnetConfig {
        name: "micro".to_string(),
        base_channels: 8,
        channel_mult: vec![1],
        attention_ds: vec![],
        head_channels: 8,
        groups: 4,
        ..UnetConfig::named("tiny").unwrap()
    };
    Unet::new(&cfg, 0).unwrap()
}

fn valid_checkpoint() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.safetensors");
    checkpoint::save_weights(&path, &micro()).unwrap();
    std::fs::read(path).unwrap()
}

fn valid_images() -> [Vec<u8>; 2] {
    let dir = tempfile::tempdir().unwrap();
    ["i.png", "i.jpg"].map(|name| {
        let path = dir.path().join(name);
        save_image(&path, &texture(20, 3), 0).unwrap();
        std::fs::read(path).unwrap()
    })
}

/// Mutations of a valid file: byte overwrites (biased to the header, where
/// the structure is), then an optional truncation.
fn mutated(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = base.len();
    (
        prop::collection::vec((0..len.min(400), any::<u8>()), 0..8),
        prop::collection::vec((0..len, any::<u8>()), 0..8),
        prop::option::of(0..len),
    )
        .prop_map(move |(head, anywhere, cut)| {
            let mut b = base.clone();
            for (i, v) in head.into_iter().chain(anywhere) {
                b[i] = v;
            }
            if let Some(c) = cut {
                b.truncate(c);
            }
            b
        })
}

fn any_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..600)
}

/// Loads a checkpoint as every command does; only errors may come back.
fn load_checkpoint(bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.safetensors");
    std::fs::write(&path, bytes).unwrap();
    if let Ok(ck) = Checkpoint::open(&path) {
        if let Ok(specs) = param_specs(&ck.config) {
            let _ = ck.check_group("", &specs);
            let _ = ck.has_group(EMA_PREFIX, &specs);
            let _ = ck.load_unet("");
        }
    }
}

fn load_image_bytes(bytes: &[u8], ext: &str) -> nadb::Result<Tensor> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("f.{ext}"));
    std::fs::write(&path, bytes).unwrap();
    load_image(&path)
}

/// Valid files of every layout the loader reads: (extension, bytes) for
/// RGB, grey, 16-bit RGB and RGBA PNGs, and RGB and grey JPEGs.
fn valid_layouts() -> Vec<(&'static str, Vec<u8>)> {
    use image::{DynamicImage, ImageBuffer, ImageFormat};
    let rgb = image::RgbImage::from_fn(24, 20, |x, y| {
        image::Rgb([(x * 9) as u8, (y * 11) as u8, 77])
    });
    let images = [
        ("png", DynamicImage::ImageRgb8(rgb.clone())),
        (
            "png",
            DynamicImage::ImageLuma8(DynamicImage::ImageRgb8(rgb.clone()).to_luma8()),
        ),
        (
            "png",
            DynamicImage::ImageRgb16(ImageBuffer::from_fn(24, 20, |x, y| {
                image::Rgb([(x * 2500 + 3) as u16, (y * 3000 + 1) as u16, 999])
            })),
        ),
        (
            "png",
            DynamicImage::ImageRgba8(DynamicImage::ImageRgb8(rgb.clone()).to_rgba8()),
        ),
        ("jpg", DynamicImage::ImageRgb8(rgb.clone())),
        (
            "jpg",
            DynamicImage::ImageLuma8(DynamicImage::ImageRgb8(rgb).to_luma8()),
        ),
    ];
    images
        .into_iter()
        .map(|(ext, img)| {
            let format = if ext == "png" {
                ImageFormat::Png
            } else {
                ImageFormat::Jpeg
            };
            let mut bytes = std::io::Cursor::new(Vec::new());
            img.write_to(&mut bytes, format).unwrap();
            (ext, bytes.into_inner())
        })
        .collect()
}

#[test]
fn every_truncation_of_a_valid_image_is_refused() {
    for (ext, bytes) in valid_layouts() {
        assert!(
            load_image_bytes(&bytes, ext).is_ok(),
            "the whole {ext} file"
        );
        for cut in 0..bytes.len() {
            let err = load_image_bytes(&bytes[..cut], ext);
            assert!(
                err.is_err(),
                "{ext} cut to {cut} of {} bytes was read",
                bytes.len()
            );
        }
    }
}

#[test]
fn a_truncated_image_never_exits_0_at_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    for (k, (ext, bytes)) in valid_layouts().into_iter().enumerate() {
        // One cut in each part of the file: the signature, the header, the
        // first data, the middle, the end marker.
        for cut in [4, 20, 60, bytes.len() / 2, bytes.len() - 1] {
            let path = dir.path().join(format!("cut{k}-{cut}.{ext}"));
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let out = Command::new(env!("CARGO_BIN_EXE_nadb"))
                .args(["degrade", "--task", "jpeg10", path.to_str().unwrap(), "-o"])
                .arg(dir.path().join("out"))
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{}: {err}", path.display());
            assert!(
                err.starts_with(&format!("error: {}: ", path.display())),
                "{err}"
            );
        }
    }
    assert_eq!(
        std::fs::read_dir(dir.path().join("out")).unwrap().count(),
        0
    );
}

/// PNG's chunk checksum (CRC-32, ISO 3309).
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

/// A valid file with its header's width and height replaced (a JPEG's
/// SOF0 fields are 16-bit; a PNG's IHDR 32-bit, its checksum fixed to
/// match when `fix_crc`).
fn with_size(ext: &str, mut bytes: Vec<u8>, w: u32, h: u32, fix_crc: bool) -> Vec<u8> {
    if ext == "jpg" {
        let at = bytes.windows(2).position(|p| p == [0xFF, 0xC0]).unwrap() + 5;
        bytes[at..at + 2].copy_from_slice(&(h as u16).to_be_bytes());
        bytes[at + 2..at + 4].copy_from_slice(&(w as u16).to_be_bytes());
    } else {
        bytes[16..20].copy_from_slice(&w.to_be_bytes());
        bytes[20..24].copy_from_slice(&h.to_be_bytes());
        if fix_crc {
            let crc = crc32(&bytes[12..29]);
            bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        }
    }
    bytes
}

/// Sides for header edits: small, around the minimum, large, and any.
fn side() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..64, 64u32..5000, 5000u32..70_000, any::<u32>()]
}

// Cases per property: PROPTEST_CASES (default 256); CI runs the default,
// a long fuzzing run sets it high (see README).
proptest! {
    #[test]
    fn checkpoint_loader_never_panics_on_mutated_files(bytes in mutated(valid_checkpoint())) {
        load_checkpoint(&bytes);
    }

    #[test]
    fn checkpoint_loader_never_panics_on_random_bytes(bytes in any_bytes()) {
        load_checkpoint(&bytes);
    }

    #[test]
    fn image_loader_never_panics_on_mutated_png(bytes in mutated(valid_images()[0].clone())) {
        let _ = load_image_bytes(&bytes, "png");
    }

    #[test]
    fn image_loader_never_panics_on_mutated_jpeg(bytes in mutated(valid_images()[1].clone())) {
        let _ = load_image_bytes(&bytes, "jpg");
    }

    #[test]
    fn image_loader_never_panics_on_random_bytes(bytes in any_bytes()) {
        let _ = load_image_bytes(&bytes, "png");
    }
}

// The long fuzzing runs of truncation and header edits (see README).
proptest! {
    #[test]
    fn truncated_images_are_always_refused(
        (ext, bytes, cut) in prop::sample::select(valid_layouts())
            .prop_flat_map(|(ext, b)| { let n = b.len(); (Just(ext), Just(b), 0..n) })
    ) {
        prop_assert!(load_image_bytes(&bytes[..cut], ext).is_err());
    }

    #[test]
    fn edited_size_fields_never_panic_or_pass_the_budget(
        (ext, bytes) in prop::sample::select(valid_layouts()),
        w in side(),
        h in side(),
        fix_crc in any::<bool>(),
    ) {
        let edited = with_size(ext, bytes, w, h, fix_crc);
        if let Ok(x) = load_image_bytes(&edited, ext) {
            // What is read is what the header says, within the budget.
            let (w, h) = if ext == "jpg" { (w & 0xFFFF, h & 0xFFFF) } else { (w, h) };
            prop_assert_eq!(x.shape(), &[1, h as usize, w as usize, 3]);
            prop_assert!(w as u64 * h as u64 <= nadb::imageio::MAX_PIXELS);
        }
    }
}

#[test]
fn large_images_are_restored_in_tiles_within_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    write_textures(&dir.path().join("data"), 2, 24);
    let data = Arc::new(Dataset::open(&dir.path().join("data"), 16).unwrap());
    let ck = dir.path().join("nomean.safetensors");
    let mut t = Trainer::new(settings(), &UnetConfig::named("tiny").unwrap()).unwrap();
    t.run(data, 1, &ck, 1, |_| {}).unwrap();
    let r = nadb::restore::Restorer::load(&ck, None, Task::Sr4Pool).unwrap();

    let image = nadb::degrade::degrade(Task::Sr4Pool, &texture(200, 1)).unwrap();
    let whole = r.restore(&image, 1, 0).unwrap();
    // A budget that fits a 64x64 tile and the image's buffers, but not the
    // whole image: 4 x 4 tiles.
    let budget = r.peak_bytes(1, 64, 64) + 4 * 7 * 200 * 200;
    assert!(r.peak_bytes(1, 200, 200) > budget);
    let tiled = r.restore_within(&image, 1, 0, budget).unwrap();
    assert_eq!(tiled.shape(), whole.shape());
    // One step of a barely trained bridge stays close to its input; tiles
    // see less context and other noise, so the two agree only roughly.
    let mean_diff: f32 = tiled
        .data()
        .iter()
        .zip(whole.data())
        .map(|(a, b)| (a - b).abs())
        .sum::<f32>()
        / whole.numel() as f32;
    assert!(
        mean_diff < 0.05,
        "tiled and whole differ by {mean_diff} on average"
    );
    assert!(tiled.data().iter().all(|v| v.is_finite()));
    // A budget that fits no tile is an error that says what would fit.
    let err = r.restore_within(&image, 1, 0, 1 << 20).unwrap_err();
    assert!(err.0.contains("too small for a 200x200 image"), "{err}");
}

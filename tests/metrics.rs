//! PSNR/SSIM against scikit-image (tests/fixtures/metrics.json, written by
//! scripts/metrics_fixture.py) and hand-checkable cases.

use nadb::metrics::{psnr, psnr_u8, ssim, ssim_u8, to_u8};
use nadb::tensor::Tensor;
use serde_json::Value;

const TOL: f64 = 1e-3;

// ---------------------------------------------------------------------------
// Image recipes, the same integer arithmetic as scripts/metrics_fixture.py.

fn hash32(mut v: u32) -> u32 {
    v ^= v >> 16;
    v = v.wrapping_mul(0x7feb_352d);
    v ^= v >> 15;
    v = v.wrapping_mul(0x846c_a68b);
    v ^= v >> 16;
    v
}

struct Recipe {
    name: String,
    h: usize,
    w: usize,
    c: usize,
    ax: u64,
    ay: u64,
    ac: u64,
    axy: u64,
    shift: usize,
    amp: i64,
    every: u32,
    seed: u32,
}

impl Recipe {
    fn from_json(v: &Value) -> Recipe {
        let u = |k: &str| {
            v[k].as_u64()
                .unwrap_or_else(|| panic!("fixture field {k} missing"))
        };
        Recipe {
            name: v["name"].as_str().unwrap().to_string(),
            h: u("h") as usize,
            w: u("w") as usize,
            c: u("c") as usize,
            ax: u("ax"),
            ay: u("ay"),
            ac: u("ac"),
            axy: u("axy"),
            shift: u("shift") as usize,
            amp: u("amp") as i64,
            every: u("every") as u32,
            seed: u("seed") as u32,
        }
    }

    fn base(&self, y: usize, x: usize, ch: usize) -> i64 {
        let (x, y, ch) = (x as u64, y as u64, ch as u64);
        ((self.ax * x + self.ay * y + self.ac * ch + ((self.axy * x * y) >> 4)) % 256) as i64
    }

    /// (clean, distorted), interleaved HWC.
    fn pair(&self) -> (Vec<u8>, Vec<u8>) {
        let (h, w, c) = (self.h, self.w, self.c);
        let seed_key = hash32(self.seed);
        let mut clean = Vec::with_capacity(h * w * c);
        let mut dist = Vec::with_capacity(h * w * c);
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    let idx = ((y * w + x) * c + ch) as u32;
                    clean.push(self.base(y, x, ch) as u8);
                    let mut v = self.base(y, (x + self.shift).min(w - 1), ch);
                    let r = hash32(idx ^ seed_key);
                    if hash32(r ^ 0x9e37_79b9).is_multiple_of(self.every) {
                        v += (r % (2 * self.amp as u32 + 1)) as i64 - self.amp;
                    }
                    dist.push(v.clamp(0, 255) as u8);
                }
            }
        }
        (clean, dist)
    }
}

fn fixtures() -> Vec<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/metrics.json");
    let text = std::fs::read_to_string(path).expect("read tests/fixtures/metrics.json");
    let doc: Value = serde_json::from_str(&text).expect("parse metrics.json");
    let list = doc["fixtures"].as_array().expect("fixtures array").clone();
    assert!(
        list.len() >= 3,
        "expected several fixtures, got {}",
        list.len()
    );
    list
}

fn sum(v: &[u8]) -> u64 {
    v.iter().map(|&b| b as u64).sum()
}

#[test]
fn matches_scikit_image() {
    let mut worst_psnr = 0.0f64;
    let mut worst_ssim = 0.0f64;
    for f in fixtures() {
        let r = Recipe::from_json(&f);
        let (a, b) = r.pair();
        // The images are the ones scikit-image saw.
        assert_eq!(sum(&a), f["sum_clean"].as_u64().unwrap(), "{}", r.name);
        assert_eq!(sum(&b), f["sum_distorted"].as_u64().unwrap(), "{}", r.name);

        let want_psnr = f["psnr"].as_f64().unwrap();
        let want_ssim = f["ssim"].as_f64().unwrap();
        let got_psnr = psnr_u8(&a, &b);
        let got_ssim = ssim_u8(&a, &b, r.h, r.w, r.c);
        eprintln!(
            "{:>16}: psnr {got_psnr:.9} vs {want_psnr:.9} ({:.1e}), ssim {got_ssim:.9} vs {want_ssim:.9} ({:.1e})",
            r.name,
            (got_psnr - want_psnr).abs(),
            (got_ssim - want_ssim).abs()
        );
        assert!(
            (got_psnr - want_psnr).abs() < TOL,
            "{}: psnr {got_psnr} vs scikit-image {want_psnr}",
            r.name
        );
        assert!(
            (got_ssim - want_ssim).abs() < TOL,
            "{}: ssim {got_ssim} vs scikit-image {want_ssim}",
            r.name
        );
        // Symmetric in its arguments.
        assert!((psnr_u8(&b, &a) - got_psnr).abs() < 1e-12);
        assert!((ssim_u8(&b, &a, r.h, r.w, r.c) - got_ssim).abs() < 1e-12);
        worst_psnr = worst_psnr.max((got_psnr - want_psnr).abs());
        worst_ssim = worst_ssim.max((got_ssim - want_ssim).abs());
    }
    eprintln!("largest difference: psnr {worst_psnr:.2e}, ssim {worst_ssim:.2e}");
}

/// The tensor entry points quantise with to_u8 and work per image.
#[test]
fn tensor_batch_matches_u8_path() {
    let list = fixtures();
    let r = Recipe::from_json(list.iter().find(|f| f["name"] == "square_64").unwrap());
    let (a, b) = r.pair();
    // Exact preimages of the bytes: v / 127.5 - 1 maps back to v.
    let to_f = |v: &[u8]| -> Vec<f32> { v.iter().map(|&p| p as f32 / 127.5 - 1.0).collect() };
    assert_eq!(to_u8(&to_f(&a)), a);
    let shape = [2, r.h, r.w, r.c];
    // Image 0: (clean, distorted); image 1: (distorted, distorted).
    let x = Tensor::from_vec(&shape, [to_f(&a), to_f(&b)].concat());
    let y = Tensor::from_vec(&shape, [to_f(&b), to_f(&b)].concat());
    let p = psnr(&x, &y);
    let s = ssim(&x, &y);
    assert_eq!(p.len(), 2);
    assert_eq!(s.len(), 2);
    let want = &list.iter().find(|f| f["name"] == "square_64").unwrap();
    assert!((p[0] - want["psnr"].as_f64().unwrap()).abs() < TOL);
    assert!((s[0] - want["ssim"].as_f64().unwrap()).abs() < TOL);
    assert_eq!(p[1], f64::INFINITY);
    assert!((s[1] - 1.0).abs() < 1e-12);
}

#[test]
fn psnr_of_one_gray_level_everywhere() {
    let (h, w, c) = (20, 30, 3);
    let a: Vec<u8> = (0..h * w * c).map(|i| (i % 200 + 1) as u8).collect();
    let want = 20.0 * 255f64.log10(); // 48.130803608679...
    assert!((want - 48.1308036).abs() < 1e-6);
    // Every value one level up, and alternately one up and one down: MSE 1.
    let up: Vec<u8> = a.iter().map(|&v| v + 1).collect();
    let alt: Vec<u8> = a
        .iter()
        .enumerate()
        .map(|(i, &v)| if i % 2 == 0 { v + 1 } else { v - 1 })
        .collect();
    assert!((psnr_u8(&a, &up) - want).abs() < 1e-9);
    assert!((psnr_u8(&a, &alt) - want).abs() < 1e-9);
    // Two levels: MSE 4, 6.02 dB less.
    let up2: Vec<u8> = a.iter().map(|&v| v + 2).collect();
    assert!((psnr_u8(&a, &up2) - (want - 20.0 * 2f64.log10())).abs() < 1e-9);
}

#[test]
fn psnr_of_max_error_is_zero_and_identical_is_infinite() {
    let a = vec![0u8; 300];
    let b = vec![255u8; 300];
    assert!(psnr_u8(&a, &b).abs() < 1e-12);
    assert_eq!(psnr_u8(&a, &a), f64::INFINITY);
}

#[test]
fn ssim_of_image_with_itself_is_one() {
    for f in fixtures() {
        let r = Recipe::from_json(&f);
        let (a, b) = r.pair();
        assert!(
            (ssim_u8(&a, &a, r.h, r.w, r.c) - 1.0).abs() < 1e-12,
            "{}",
            r.name
        );
        assert!(
            (ssim_u8(&b, &b, r.h, r.w, r.c) - 1.0).abs() < 1e-12,
            "{}",
            r.name
        );
        assert!(ssim_u8(&a, &b, r.h, r.w, r.c) < 1.0 - 1e-6, "{}", r.name);
    }
}

#[test]
fn ssim_of_constant_images() {
    // Zero variance everywhere: SSIM reduces to the luminance term
    // (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1).
    let (h, w, c) = (12, 15, 3);
    let a = vec![100u8; h * w * c];
    let b = vec![110u8; h * w * c];
    let c1 = (0.01f64 * 255.0).powi(2);
    let want = (2.0 * 100.0 * 110.0 + c1) / (100.0f64.powi(2) + 110.0f64.powi(2) + c1);
    assert!((ssim_u8(&a, &b, h, w, c) - want).abs() < 1e-9);
}

#[test]
fn ssim_averages_channels() {
    // Channel 0 identical, channel 1 constant offset: mean of 1 and the
    // luminance term of channel 1.
    let (h, w) = (11, 13);
    let mut a = Vec::new();
    let mut b = Vec::new();
    for i in 0..h * w {
        let v = (i * 7 % 256) as u8;
        a.extend([v, 50]);
        b.extend([v, 60]);
    }
    let c1 = (0.01f64 * 255.0).powi(2);
    let lum = (2.0 * 50.0 * 60.0 + c1) / (2500.0 + 3600.0 + c1);
    assert!((ssim_u8(&a, &b, h, w, 2) - (1.0 + lum) / 2.0).abs() < 1e-9);
}

#[test]
#[should_panic(expected = "smaller than the 11x11 window")]
fn ssim_rejects_images_smaller_than_the_window() {
    let a = vec![0u8; 10 * 20 * 3];
    ssim_u8(&a, &a, 10, 20, 3);
}

#[test]
fn to_u8_maps_clamps_and_rounds() {
    assert_eq!(to_u8(&[-1.0, 1.0, 0.0]), vec![0, 255, 128]);
    assert_eq!(
        to_u8(&[-1.5, -100.0, 1.5, 7.0, f32::INFINITY, f32::NEG_INFINITY]),
        vec![0, 0, 255, 255, 255, 0]
    );
    // v / 127.5 - 1 is an exact preimage of every byte.
    let all: Vec<f32> = (0..=255).map(|v| v as f32 / 127.5 - 1.0).collect();
    assert_eq!(to_u8(&all), (0..=255).map(|v| v as u8).collect::<Vec<u8>>());
    // Rounding, not truncation: 0.6 of a level up rounds up, 0.4 down.
    let lv = |k: f32| k / 127.5 - 1.0;
    assert_eq!(
        to_u8(&[lv(10.6), lv(10.4), lv(254.7), lv(0.3)]),
        vec![11, 10, 255, 0]
    );
    assert_eq!(to_u8(&[f32::NAN]), vec![0]);
    assert!(to_u8(&[]).is_empty());
}

//! The degradations of spec section 6 against hand-computed values.

use nadb::degrade::{
    bicubic_taps, degrade, gaussian_taps, jpeg, jpeg_quant_tables, Task, TASK_NAMES,
};
use nadb::Tensor;

/// A `[1, h, w, c]` image from a function of (row, column, channel).
fn image(h: usize, w: usize, c: usize, f: impl Fn(usize, usize, usize) -> f32) -> Tensor {
    let mut data = Vec::with_capacity(h * w * c);
    for y in 0..h {
        for x in 0..w {
            for ch in 0..c {
                data.push(f(y, x, ch));
            }
        }
    }
    Tensor::from_vec(&[1, h, w, c], data)
}

/// Pixel (y, x, ch) of image `b` of a batch.
fn px(t: &Tensor, b: usize, y: usize, x: usize, ch: usize) -> f32 {
    let (_, h, w, c) = t.nhwc();
    t.data()[((b * h + y) * w + x) * c + ch]
}

/// A deterministic RGB image with edges and fine texture, inside [-1, 1].
fn textured(h: usize, w: usize) -> Tensor {
    image(h, w, 3, |y, x, c| {
        let (yf, xf, cf) = (y as f32, x as f32, c as f32);
        let wave = 0.5 * (0.7 * xf + 0.3 * yf + cf).sin() * (0.45 * yf - 0.2 * xf).cos();
        let grain = ((x * 7 + y * 13 + c * 5) % 11) as f32 / 11.0 * 0.4 - 0.2;
        let edge = if (x / 6 + y / 5) % 2 == 0 {
            0.25
        } else {
            -0.25
        };
        (wave + grain + edge).clamp(-1.0, 1.0)
    })
}

fn mse(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let sum: f64 = a
        .data()
        .iter()
        .zip(b.data())
        .map(|(p, q)| ((p - q) as f64).powi(2))
        .sum();
    sum / a.numel() as f64
}

/// [-1, 1] -> [0, 1].
fn unit(v: f32) -> f64 {
    (v as f64 + 1.0) / 2.0
}

/// numpy's 'reflect' index (no edge repeat), written out independently.
fn np_reflect(i: usize, n: usize) -> usize {
    let mut i = i as isize;
    let n = n as isize;
    loop {
        if i < 0 {
            i = -i;
        } else if i >= n {
            i = 2 * (n - 1) - i;
        } else {
            return i as usize;
        }
    }
}

#[test]
fn task_names_parse_print_and_beta_max() {
    for (i, name) in TASK_NAMES.iter().enumerate() {
        let task: Task = name.parse().unwrap();
        assert_eq!(task.name(), *name);
        assert_eq!(task.to_string(), *name);
        assert_eq!(task as usize, i);
    }
    let err = "jpeg7".parse::<Task>().unwrap_err().to_string();
    assert!(err.contains("unknown task 'jpeg7'"), "{err}");
    assert!(err.contains("sr4-bicubic"), "{err}");
    let beta = |s: &str| s.parse::<Task>().unwrap().i2sb_beta_max();
    for s in ["jpeg5", "jpeg10", "sr4-pool", "sr4-bicubic"] {
        assert_eq!(beta(s), 0.3, "{s}");
    }
    for s in [
        "blur-uniform",
        "blur-gauss",
        "blur-uniform-sep",
        "blur-gauss-sep",
    ] {
        assert_eq!(beta(s), 1.0, "{s}");
    }
    let ot_ode: Vec<&str> = TASK_NAMES
        .into_iter()
        .filter(|s| s.parse::<Task>().unwrap().i2sb_ot_ode_default())
        .collect();
    assert_eq!(ot_ode, ["blur-uniform", "blur-gauss"]);
}

#[test]
fn sr4_pool_is_an_exact_4x4_mean_replicated() {
    // Pixel = (8y + x)/40 - 0.5 + 0.1c, one outlier at (2, 5, channel 1).
    let x = image(4, 8, 3, |y, x, c| {
        if (y, x, c) == (2, 5, 1) {
            0.9
        } else {
            (8 * y + x) as f32 / 40.0 - 0.5 + 0.1 * c as f32
        }
    });
    let out = degrade(Task::Sr4Pool, &x).unwrap();
    assert_eq!(out.shape(), &[1, 4, 8, 3]);
    // Block 0: mean of 8y + x over y, x in 0..4 is 13.5; block 1: 17.5.
    // Outlier: 0.9 instead of 21/40 - 0.5 + 0.1 = 0.125, +0.775/16.
    for c in 0..3 {
        let b0 = 13.5 / 40.0 - 0.5 + 0.1 * c as f64;
        let mut b1 = 17.5 / 40.0 - 0.5 + 0.1 * c as f64;
        if c == 1 {
            b1 += 0.775 / 16.0;
            assert!((b1 - 0.0859375).abs() < 1e-12);
        }
        for y in 0..4 {
            for xx in 0..4 {
                let (v0, v1) = (px(&out, 0, y, xx, c), px(&out, 0, y, xx + 4, c));
                assert!((v0 as f64 - b0).abs() < 1e-6, "block 0 c{c}: {v0} vs {b0}");
                assert!((v1 as f64 - b1).abs() < 1e-6, "block 1 c{c}: {v1} vs {b1}");
            }
        }
    }
}

#[test]
fn sr4_pads_by_reflection_without_edge_repeat() {
    // Height 5 -> padded to 8 with rows 5, 6, 7 = rows 3, 2, 1.
    let x = image(5, 4, 3, |y, _, _| y as f32 / 8.0 - 0.25);
    let out = degrade(Task::Sr4Pool, &x).unwrap();
    assert_eq!(out.shape(), &[1, 5, 4, 3]);
    // Rows 0..4: mean 1.5 -> -0.0625. Row 4 reads rows 4, 3, 2, 1: mean 2.5
    // -> 0.0625 (an edge repeat would give 4 -> 0.25).
    for xx in 0..4 {
        assert!((px(&out, 0, 0, xx, 0) - -0.0625).abs() < 1e-6);
        assert!((px(&out, 0, 3, xx, 2) - -0.0625).abs() < 1e-6);
        assert!((px(&out, 0, 4, xx, 1) - 0.0625).abs() < 1e-6);
    }
}

#[test]
fn bicubic_taps_are_normalised_keys_weights() {
    // Keys (a = -0.5) at |x| = 0.125, 0.375, ..., 1.875, worked by hand,
    // divided by their total 4.
    let half = [
        0.240966796875,  // 0.9638671875 / 4
        0.181884765625,  // 0.7275390625 / 4
        0.097412109375,  // 0.3896484375 / 4
        0.022705078125,  // 0.0908203125 / 4
        -0.011962890625, // -0.0478515625 / 4
        -0.018310546875, // -0.0732421875 / 4
        -0.010986328125, // -0.0439453125 / 4
        -0.001708984375, // -0.0068359375 / 4
    ];
    let keys = |x: f64| {
        let x = x.abs();
        if x <= 1.0 {
            1.5 * x * x * x - 2.5 * x * x + 1.0
        } else if x < 2.0 {
            -0.5 * x * x * x + 2.5 * x * x - 4.0 * x + 2.0
        } else {
            0.0
        }
    };
    let taps = bicubic_taps();
    for i in 0..16 {
        let by_hand = if i < 8 { half[7 - i] } else { half[i - 8] };
        let by_formula = keys((i as f64 - 7.5) / 4.0) / 4.0;
        assert!((taps[i] - by_hand).abs() < 1e-12, "tap {i}: {}", taps[i]);
        assert!((taps[i] - by_formula).abs() < 1e-12, "tap {i}");
    }
    assert!((taps.iter().sum::<f64>() - 1.0).abs() < 1e-12);
}

#[test]
fn sr4_bicubic_keeps_constants() {
    for (h, w) in [(32, 32), (37, 23), (6, 10)] {
        let x = image(h, w, 3, |_, _, c| 0.3 - 0.2 * c as f32);
        let out = degrade(Task::Sr4Bicubic, &x).unwrap();
        assert_eq!(out.shape(), x.shape());
        let d = out.max_abs_diff(&x);
        assert!(d < 1e-6, "{h}x{w}: constant moved by {d}");
    }
}

#[test]
fn sr4_bicubic_on_a_ramp_reads_the_reference_pixels() {
    let ramp = |i: usize| i as f64 / 16.0 - 1.0;
    // Along the width and, transposed, along the height.
    let along_w = image(8, 32, 3, |_, x, _| ramp(x) as f32);
    let along_h = image(32, 8, 3, |y, _, _| ramp(y) as f32);
    let out_w = degrade(Task::Sr4Bicubic, &along_w).unwrap();
    let out_h = degrade(Task::Sr4Bicubic, &along_h).unwrap();
    let taps = bicubic_taps();
    // Output block o reads inputs 4o - 6 ..= 4o + 9 with taps 0..=15; off
    // the image the reference folds j < 0 to -j - 1 and j >= 32 to 63 - j.
    // Blocks 0, 1, 6 and 7 reach past an edge:
    let folded: [(usize, [usize; 16]); 4] = [
        (0, [5, 4, 3, 2, 1, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
        (1, [1, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]),
        (
            6,
            [
                18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 31, 30,
            ],
        ),
        (
            7,
            [
                22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 31, 30, 29, 28, 27, 26,
            ],
        ),
    ];
    // Inside, a symmetric filter keeps a line: the value at the block
    // centre 4o + 1.5.
    let mut expected: [f64; 8] = std::array::from_fn(|o| (4.0 * o as f64 + 1.5) / 16.0 - 1.0);
    for (o, idx) in folded {
        let e: f64 = (0..16).map(|t| taps[t] * ramp(idx[t])).sum();
        // The fold moves the edge blocks off the line (the test sees it).
        assert!((e - expected[o]).abs() > 2e-4, "block {o}: {e}");
        expected[o] = e;
    }
    for (o, e) in expected.iter().enumerate() {
        for k in 0..4 {
            let (vw, vh) = (
                px(&out_w, 0, 3, 4 * o + k, 1),
                px(&out_h, 0, 4 * o + k, 5, 2),
            );
            assert!((vw as f64 - e).abs() < 1e-5, "width block {o}: {vw} vs {e}");
            assert!(
                (vh as f64 - e).abs() < 1e-5,
                "height block {o}: {vh} vs {e}"
            );
        }
    }
}

#[test]
fn gaussian_taps_match_the_reference() {
    let g = gaussian_taps();
    let expected = [0.1980, 0.2010, 0.2020, 0.2010, 0.1980];
    let raw: Vec<f64> = [-2.0f64, -1.0, 0.0, 1.0, 2.0]
        .iter()
        .map(|x| (-x * x / 200.0).exp())
        .collect();
    let total: f64 = raw.iter().sum();
    for i in 0..5 {
        assert!((g[i] - expected[i]).abs() < 5e-5, "tap {i}: {}", g[i]);
        assert!((g[i] - raw[i] / total).abs() < 1e-12, "tap {i}");
    }
}

#[test]
fn separable_blurs_darken_mid_grey_as_the_reference_h() {
    // Mid-grey 0.5 in [0, 1] is 0 in [-1, 1]. In the interior each 1-D pass
    // multiplies by the row sum: 8/9 (uniform), 1 - g[4] (Gaussian).
    let x = Tensor::zeros(&[1, 32, 32, 3]);
    let g = gaussian_taps();
    let cases = [
        (Task::BlurUniformSep, 0.395, 0.5 * (8.0f64 / 9.0).powi(2)),
        (Task::BlurGaussSep, 0.322, 0.5 * (1.0 - g[4]).powi(2)),
    ];
    for (task, about, exact) in cases {
        let out = degrade(task, &x).unwrap();
        for (y, xx) in [(16, 16), (8, 20), (27, 5)] {
            let v = unit(px(&out, 0, y, xx, 1));
            assert!((v - about).abs() < 1e-3, "{task}: {v} vs {about}");
            assert!((v - exact).abs() < 1e-6, "{task}: {v} vs {exact}");
        }
    }
}

#[test]
fn separable_blurs_spread_a_point_over_k_minus_1_taps() {
    // A white point at (20, 20) on black: output (i, j) = H[i][20] H[j][20],
    // with H[i][j] = tap[j - i + k/2] for j in [i - k/2, i + k/2).
    let x = image(
        40,
        40,
        3,
        |y, x, _| if (y, x) == (20, 20) { 1.0 } else { -1.0 },
    );
    let g = gaussian_taps();
    let uniform = |i: usize| {
        if (17..=24).contains(&i) {
            1.0 / 9.0
        } else {
            0.0
        }
    };
    let gauss = |i: usize| {
        if (19..=22).contains(&i) {
            g[22 - i]
        } else {
            0.0
        }
    };
    let cases: [(Task, &dyn Fn(usize) -> f64); 2] = [
        (Task::BlurUniformSep, &uniform),
        (Task::BlurGaussSep, &gauss),
    ];
    for (task, column) in cases {
        let out = degrade(task, &x).unwrap();
        for y in 10..30 {
            for xx in 10..30 {
                let v = unit(px(&out, 0, y, xx, 0));
                let e = column(y) * column(xx);
                assert!((v - e).abs() < 1e-6, "{task} ({y}, {xx}): {v} vs {e}");
            }
        }
    }
    // The uniform blur's footprint is 8 wide: rows 17..=24 lit, 16 and 25 dark.
    let out = degrade(Task::BlurUniformSep, &x).unwrap();
    assert!(unit(px(&out, 0, 17, 20, 2)) > 0.01 && unit(px(&out, 0, 24, 20, 2)) > 0.01);
    assert!(unit(px(&out, 0, 16, 20, 2)).abs() < 1e-6);
    assert!(unit(px(&out, 0, 25, 20, 2)).abs() < 1e-6);
}

#[test]
fn the_paper_blur_of_a_2x2_image_is_hand_computable() {
    // Gaussian, n = 2: H = [[g2, g1], [g1, g2]] (g1 = g3), whose SVD is
    // U = V = [[1, 1], [1, -1]] / sqrt 2 with S = (g2 + g1, g2 - g1); the
    // second (0.001) is below 3e-2 and zeroed. So ss = (s^2, 0, 0, 0) with
    // s = g1 + g2, the identity permutation (ties in row-major order), and
    // channel c keeps only the coefficient p with 3p + c = 0 (mod 4):
    // c = 0 the mean K[0][0] (a true blur), c = 1 K[0][1] (the horizontal
    // difference), c = 2 K[1][0] (the vertical one), each times s^2.
    let g = gaussian_taps();
    let s2 = (g[1] + g[2]).powi(2);
    let vals = [
        [0.9f32, 0.1, -0.3, 0.5],
        [0.2, -0.8, 0.6, 0.4],
        [-0.5, 0.7, 0.3, -0.9],
    ];
    let x = image(2, 2, 3, |y, xx, c| vals[c][2 * y + xx]);
    let out = degrade(Task::BlurGauss, &x).unwrap();
    for (c, channel) in vals.iter().enumerate() {
        let u: Vec<f64> = channel.iter().map(|&v| unit(v)).collect();
        let (x00, x01, x10, x11) = (u[0], u[1], u[2], u[3]);
        for y in 0..2 {
            for xx in 0..2 {
                let sign = |i: usize| if i == 0 { 1.0 } else { -1.0 };
                let want = s2 / 4.0
                    * match c {
                        0 => x00 + x01 + x10 + x11,
                        1 => (x00 - x01 + x10 - x11) * sign(xx),
                        _ => (x00 + x01 - x10 - x11) * sign(y),
                    };
                let got = unit(px(&out, 0, y, xx, c));
                assert!(
                    (got - want).abs() < 1e-6,
                    "c{c} ({y}, {xx}): {got} vs {want}"
                );
            }
        }
    }
    // A flat image keeps its level only in channel 0: s^2 x.
    let flat = degrade(Task::BlurGauss, &Tensor::zeros(&[1, 2, 2, 3])).unwrap();
    assert!((unit(px(&flat, 0, 1, 0, 0)) - 0.5 * s2).abs() < 1e-6);
    assert!(unit(px(&flat, 0, 1, 0, 1)).abs() < 1e-6);
    assert!(unit(px(&flat, 0, 0, 1, 2)).abs() < 1e-6);
}

/// `[2, h, w, 3]` f32 from a fixture of scripts/blur_reference.py:
/// blur-uniform then blur-gauss, computed with numpy from the spec's steps.
fn blur_fixture(name: &str, h: usize, w: usize) -> [Tensor; 2] {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let all: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(all.len(), 2 * h * w * 3, "{path}");
    let (a, b) = all.split_at(h * w * 3);
    [a, b].map(|d| Tensor::from_vec(&[1, h, w, 3], d.to_vec()))
}

const PAPER_BLURS: [Task; 2] = [Task::BlurUniform, Task::BlurGauss];

#[test]
fn the_paper_blur_spreads_a_point_far_with_negative_lobes() {
    // A white point at (16, 16) on black, 32 x 32.
    let x = image(
        32,
        32,
        3,
        |y, x, _| if (y, x) == (16, 16) { 1.0 } else { -1.0 },
    );
    let reference = blur_fixture("blur_impulse_32x32.f32", 32, 32);
    for (task, want) in PAPER_BLURS.into_iter().zip(reference) {
        let out = degrade(task, &x).unwrap();
        let d = out.max_abs_diff(&want);
        assert!(d < 1e-5, "{task}: {d} from numpy");
        // The separable blur is zero beyond 4 pixels of the point; this one
        // reaches across the image, with negative values.
        let (mut far, mut most_negative) = (0, 0.0f64);
        for y in 0..32 {
            for xx in 0..32 {
                for c in 0..3 {
                    let v = unit(px(&out, 0, y, xx, c));
                    most_negative = most_negative.min(v);
                    if y.abs_diff(16).max(xx.abs_diff(16)) > 8 && v.abs() > 1e-3 {
                        far += 1;
                    }
                }
            }
        }
        assert!(
            far > 1000,
            "{task}: {far} values above 1e-3 beyond 8 pixels"
        );
        assert!(most_negative < -5e-3, "{task}: lowest {most_negative}");
    }
}

#[test]
fn the_paper_blur_matches_numpy_on_a_photograph() {
    let photo = nadb::imageio::load_image(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/original/green-meadow.png"
    )))
    .unwrap();
    let (_, ph, pw, _) = photo.nhwc();
    // Square as the reference; 48 x 64 is the engine's per-side extension.
    for (h, w) in [(64, 64), (48, 64)] {
        let crop = nadb::cpu::pad::crop(&photo, (ph - h) / 2, (pw - w) / 2, h, w);
        let reference = blur_fixture(&format!("blur_photo_{h}x{w}.f32"), h, w);
        for (task, want) in PAPER_BLURS.into_iter().zip(reference) {
            let d = degrade(task, &crop).unwrap().max_abs_diff(&want);
            assert!(d < 1e-4, "{task} {h}x{w}: {d} from numpy");
        }
    }
}

#[test]
fn jpeg_tables_scale_ijg_style() {
    // q = 5: s = 1000, entry = floor(10 T + 0.5) = 10 T, clipped to 255.
    let (l5, c5) = jpeg_quant_tables(5).unwrap();
    assert_eq!(&l5[..8], &[160, 110, 100, 160, 240, 255, 255, 255]);
    assert_eq!(l5[8], 120);
    assert_eq!(&c5[..4], &[170, 180, 240, 255]);
    // q = 10: s = 500, entry = 5 T: 16 -> 80, 11 -> 55, 40 -> 200, 61 -> 255.
    let (l10, c10) = jpeg_quant_tables(10).unwrap();
    assert_eq!(&l10[..8], &[80, 55, 50, 80, 120, 200, 255, 255]);
    assert_eq!(&c10[..5], &[85, 90, 120, 235, 255]);
    // q = 50: the tables themselves; q = 90: s = 20, floor((20*16+50)/100) = 3;
    // q = 100: s = 0, floor(0.5) = 0 -> clipped to 1.
    let (l50, c50) = jpeg_quant_tables(50).unwrap();
    assert_eq!((l50[0], l50[63], c50[0], c50[63]), (16, 99, 17, 99));
    assert_eq!(jpeg_quant_tables(90).unwrap().0[0], 3);
    assert!(jpeg_quant_tables(100).unwrap().0.iter().all(|&v| v == 1));
    assert!(jpeg_quant_tables(0).is_err());
    assert!(jpeg_quant_tables(101).is_err());
}

#[test]
fn jpeg5_loses_more_than_jpeg10() {
    let x = textured(64, 64);
    let e5 = mse(&degrade(Task::Jpeg5, &x).unwrap(), &x);
    let e10 = mse(&degrade(Task::Jpeg10, &x).unwrap(), &x);
    assert!(e10 > 1e-3, "jpeg10 barely changed a textured image: {e10}");
    assert!(e5 > 1.1 * e10, "jpeg5 MSE {e5} not above jpeg10 MSE {e10}");
}

#[test]
fn jpeg_of_flat_grey_is_hand_computable() {
    // 0 in [-1, 1] is 127.5: luma DC 8 (127.5 - 128) = -4 quantises to 0, so
    // every pixel comes back as 128, 1/255 in [-1, 1]; chroma stays 128.
    let x = Tensor::zeros(&[1, 32, 48, 3]);
    for task in [Task::Jpeg5, Task::Jpeg10] {
        let out = degrade(task, &x).unwrap();
        for &v in out.data() {
            assert!((v - 1.0 / 255.0).abs() < 1e-6, "{task}: {v}");
        }
    }
    // 160: DC = 8 * 32 = 256; q10: 256/80 = 3.2 -> 3 -> 240 -> 128 + 30 = 158;
    // q5: 256/160 = 1.6 -> 2 -> 320 -> 128 + 40 = 168.
    let to_signed = |v: f32| v / 255.0 * 2.0 - 1.0;
    let x = Tensor::full(&[1, 16, 16, 3], to_signed(160.0));
    for (task, level) in [(Task::Jpeg10, 158.0), (Task::Jpeg5, 168.0)] {
        let out = degrade(task, &x).unwrap();
        for &v in out.data() {
            assert!((v - to_signed(level)).abs() < 1e-5, "{task}: {v}");
        }
    }
}

#[test]
fn jpeg_at_quality_100_is_nearly_lossless_when_chroma_is_2x2_flat() {
    // A colour per 2x2 block plus a per-pixel grey offset: the offset only
    // moves Y (the Cb, Cr rows sum to 0), so decimating chroma loses nothing
    // and what is left is rounding to unit steps in the orthonormal DCT.
    let base = textured(32, 48);
    let x = image(32, 48, 3, |y, x, c| {
        let grey = ((x * 5 + y * 3) % 7) as f32 / 7.0 * 0.3 - 0.15;
        0.8 * px(&base, 0, y / 2 * 2, x / 2 * 2, c) + grey
    });
    let out = jpeg(&x, 100).unwrap();
    let (rmse, max) = (mse(&out, &x).sqrt(), out.max_abs_diff(&x));
    assert!(rmse < 0.005, "rmse {rmse}");
    assert!(max < 0.03, "max error {max}");
    // Quality 5 on the same image is far worse.
    assert!(mse(&jpeg(&x, 5).unwrap(), &x).sqrt() > 5.0 * rmse);
}

#[test]
fn jpeg_chroma_is_decimated_from_even_rows_and_columns() {
    // Colour A on (even, even) pixels, B elsewhere. At quality 100 luma comes
    // back nearly exact and every 2x2 block takes A's chroma (no averaging):
    // A stays A, and a B pixel becomes A shifted by grey to B's luma.
    let (a, b) = ([0.6f32, -0.2, -0.4], [-0.3f32, 0.1, 0.5]);
    let x = image(16, 16, 3, |y, x, c| {
        if y % 2 == 0 && x % 2 == 0 {
            a[c]
        } else {
            b[c]
        }
    });
    let out = jpeg(&x, 100).unwrap();
    // Y(A) - Y(B) = 0.299 * 0.9 - 0.587 * 0.3 - 0.114 * 0.9 = -0.0096.
    let b_with_a_chroma = [0.6096f32, -0.1904, -0.3904];
    for y in 0..16 {
        for xx in 0..16 {
            for c in 0..3 {
                let expected = if y % 2 == 0 && xx % 2 == 0 {
                    a[c]
                } else {
                    b_with_a_chroma[c]
                };
                let v = px(&out, 0, y, xx, c);
                assert!(
                    (v - expected).abs() < 0.02,
                    "({y}, {xx}, {c}): {v} vs {expected}"
                );
            }
        }
    }
}

#[test]
fn jpeg_pads_odd_sizes_by_reflection() {
    // 37x23 -> 48x32: the result is the crop of the JPEG of the numpy-reflect
    // padded image.
    let x = textured(37, 23);
    let padded = image(48, 32, 3, |y, xx, c| {
        px(&x, 0, np_reflect(y, 37), np_reflect(xx, 23), c)
    });
    let direct = degrade(Task::Jpeg10, &x).unwrap();
    let via_pad = degrade(Task::Jpeg10, &padded).unwrap();
    let mut worst = 0.0f32;
    for y in 0..37 {
        for xx in 0..23 {
            for c in 0..3 {
                worst = worst.max((px(&direct, 0, y, xx, c) - px(&via_pad, 0, y, xx, c)).abs());
            }
        }
    }
    assert!(
        worst < 1e-6,
        "differs from the padded computation by {worst}"
    );
}

#[test]
fn every_task_takes_odd_sizes_and_batches() {
    let a = textured(37, 23);
    let b = image(37, 23, 3, |y, x, c| px(&a, 0, 36 - y, x, c) * 0.5);
    let mut data = a.data().to_vec();
    data.extend_from_slice(b.data());
    let batch = Tensor::from_vec(&[2, 37, 23, 3], data);
    for task in TASK_NAMES.iter().map(|s| s.parse::<Task>().unwrap()) {
        let out = degrade(task, &batch).unwrap();
        assert_eq!(out.shape(), &[2, 37, 23, 3], "{task}");
        assert!(out.data().iter().all(|v| v.is_finite()), "{task}");
        let changed = mse(&out, &batch);
        assert!(
            changed > 1e-5,
            "{task} left the image unchanged ({changed})"
        );
        // Images are independent: the batch gives what each image gives alone.
        let alone = degrade(task, &b).unwrap();
        let second = &out.data()[37 * 23 * 3..];
        let d = second
            .iter()
            .zip(alone.data())
            .map(|(p, q)| (p - q).abs())
            .fold(0.0f32, f32::max);
        assert!(d < 1e-6, "{task}: batch differs from single by {d}");
    }
}

#[test]
fn bad_inputs_are_errors() {
    let tiny = Tensor::zeros(&[1, 1, 1, 3]);
    for task in [Task::Jpeg5, Task::Jpeg10, Task::Sr4Pool, Task::Sr4Bicubic] {
        let err = degrade(task, &tiny).unwrap_err().to_string();
        assert!(err.contains("too small"), "{task}: {err}");
        assert!(err.starts_with(task.name()), "{task}: {err}");
    }
    // One bad side is enough.
    let err = degrade(Task::Sr4Bicubic, &Tensor::zeros(&[1, 8, 1, 3])).unwrap_err();
    assert!(err.to_string().contains("width"), "{err}");
    let err = degrade(Task::Jpeg10, &Tensor::zeros(&[1, 1, 16, 3])).unwrap_err();
    assert!(err.to_string().contains("height"), "{err}");
    // JPEG is RGB only.
    let rgba = Tensor::zeros(&[1, 16, 16, 4]);
    for task in [Task::Jpeg5, Task::Jpeg10] {
        let err = degrade(task, &rgba).unwrap_err().to_string();
        assert!(err.contains("3 channels") && err.contains('4'), "{err}");
    }
    // The paper's blur tiles its singular values over exactly 3 channels.
    for task in PAPER_BLURS {
        let err = degrade(task, &rgba).unwrap_err().to_string();
        assert!(
            err.contains("3 channels") && err.starts_with(task.name()),
            "{err}"
        );
    }
    // Not NHWC, or an empty side.
    assert!(degrade(Task::BlurGauss, &Tensor::zeros(&[16, 16, 3])).is_err());
    assert!(degrade(Task::BlurUniform, &Tensor::zeros(&[1, 0, 16, 3])).is_err());
    // The blurs need no padding: a single pixel is a 1x1 operator H = [1/9].
    let out = degrade(Task::BlurUniform, &tiny).unwrap();
    assert!((unit(out.data()[0]) - 0.5 / 81.0).abs() < 1e-6);
}

//! Flash attention (kernels/attention.cu) against `cpu::attention`: the
//! output, the log-sum-exp (against an f64 one from the same inputs) and
//! the qkv gradient, in both modes, at odd token counts, several heads,
//! head dims 64 and 32, and one long forward (4096 tokens, 64 tiles; 400
//! tokens, 7 tiles, on the emulated device).

use crate::common::{assert_close, dev, emulated, random, MODES};
use nadb::cpu::attention as cpu;
use nadb::cuda::attention as gpu;
use nadb::tensor::Tensor;

pub const TESTS: &[crate::Test] = &[
    ("attention_hd64_35_tokens", hd64_35_tokens),
    ("attention_hd64_2_heads", hd64_2_heads),
    ("attention_hd64_256_tokens", hd64_256_tokens),
    ("attention_hd32_3_heads", hd32_3_heads),
    ("attention_hd64_long_forward", hd64_long_forward),
];

/// The log-sum-exp of every query row's scaled scores, `[n, heads, T]`, in f64.
fn lse_reference(qkv: &Tensor, head_dim: usize) -> Tensor {
    let (n, h, w, c3) = qkv.nhwc();
    let (t, heads) = (h * w, c3 / 3 / head_dim);
    let scale = 1.0 / (head_dim as f64).sqrt();
    let q = qkv.data();
    let at = |img: usize, tok: usize, ch: usize| q[(img * t + tok) * c3 + ch] as f64;
    let mut out = Vec::with_capacity(n * heads * t);
    for img in 0..n {
        for head in 0..heads {
            let (qo, ko) = (head * 3 * head_dim, head * 3 * head_dim + head_dim);
            for i in 0..t {
                let s: Vec<f64> = (0..t)
                    .map(|j| {
                        (0..head_dim)
                            .map(|d| at(img, i, qo + d) * at(img, j, ko + d))
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let total: f64 = s.iter().map(|v| (v - max).exp()).sum();
                out.push((max + total.ln()) as f32);
            }
        }
    }
    Tensor::from_vec(&[n, heads, t], out)
}

/// Forward (and, if `backward`, the gradient) on `[n, h, w, 3c]` in every mode.
fn check(shape: [usize; 4], head_dim: usize, backward: bool, seed: u64) {
    let qkv = random(&shape, seed, 1.5);
    let dy = random(&[shape[0], shape[1], shape[2], shape[3] / 3], seed + 1, 1.0);
    for (dtype, tol) in MODES {
        let what = |part: &str| format!("attention {part} {shape:?} hd {head_dim} {dtype:?}");
        // The CPU runs on the numbers the device holds (bf16-rounded in bf16 mode).
        let qkv_d = dev(&qkv, dtype);
        let qkv_h = qkv_d.to_host().expect("download");
        let (y, probs) = cpu::attention(&qkv_h, head_dim, true);
        let probs = probs.expect("kept when asked");
        let (y_d, lse_d) = gpu::attention(&qkv_d, head_dim);
        assert_eq!(lse_d.dtype(), nadb::tensor::DType::F32, "lse is f32");
        assert_close(&what("forward"), &y, &y_d, tol);
        if !backward {
            continue;
        }
        assert_close(
            &what("log-sum-exp"),
            &lse_reference(&qkv_h, head_dim),
            &lse_d,
            tol,
        );
        let dy_d = dev(&dy, dtype);
        let dy_h = dy_d.to_host().expect("download");
        let dqkv = cpu::attention_backward(&qkv_h, &probs, &dy_h, head_dim);
        let dqkv_d = gpu::attention_backward(&qkv_d, &y_d, &lse_d, &dy_d, head_dim);
        assert_eq!(dqkv_d.dtype(), dtype, "dqkv dtype");
        assert_close(&what("backward"), &dqkv, &dqkv_d, tol);
    }
}

/// One head of 64, 35 tokens (one partial tile), two images.
fn hd64_35_tokens() {
    check([2, 7, 5, 3 * 64], 64, true, 11);
}

fn hd64_2_heads() {
    check([1, 4, 4, 3 * 128], 64, true, 12);
}

/// 256 tokens: four full tiles of queries and of keys.
fn hd64_256_tokens() {
    check([2, 16, 16, 3 * 64], 64, true, 13);
}

fn hd32_3_heads() {
    check([1, 5, 3, 3 * 96], 32, true, 14);
}

fn hd64_long_forward() {
    let side = if emulated() { 20 } else { 64 };
    check([1, side, side, 3 * 64], 64, false, 15);
}

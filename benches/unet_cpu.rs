//! CPU U-Net throughput against the engine's own SGEMM (src/cpu/gemm.rs), in one run.
//!
//! Criterion's throughput is set to the FLOPs of each case, so its
//! "elem/s" figures read as FLOP/s. After the runs, the summary prints the
//! U-Net forward's fraction of the SGEMM rate measured here (the target is
//! at least 40% for `small`, batch 4, 64x64).
//!
//! FLOPs: SGEMM 2*m*n*k; U-Net forward from `nn::forward_flops`
//! (convolutions, linear layers, attention products); forward+backward is
//! counted as 3x the forward (each product is done once forward and twice
//! backward, for the input and the weight gradients).

use criterion::{criterion_group, Criterion, Throughput};
use nadb::autograd::{Tape, Var};
use nadb::cpu::gemm::{matmul, Mat};
use nadb::nn::{forward_flops, Unet, UnetConfig};
use nadb::{ops, Tensor};
use std::hint::black_box;
use std::path::Path;

const SGEMM_SIDE: usize = 1024;
const BATCH: usize = 4;
const SIDE: usize = 64;

fn filled(shape: &[usize], seed: u32) -> Tensor {
    let n = shape.iter().product();
    let data = (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / (1 << 24) as f32
                - 0.5
        })
        .collect();
    Tensor::from_vec(shape, data)
}

fn sgemm(c: &mut Criterion) {
    let s = SGEMM_SIDE;
    let a = filled(&[s, s], 1);
    let b = filled(&[s, s], 2);
    let mut out = vec![0.0; s * s];
    let mut g = c.benchmark_group("sgemm");
    g.throughput(Throughput::Elements(2 * (s * s * s) as u64));
    g.bench_function("1024x1024x1024", |bench| {
        bench.iter(|| {
            matmul(
                Mat::rows(a.data(), s, s),
                Mat::rows(b.data(), s, s),
                &mut out,
                s,
                false,
            )
        })
    });
    g.finish();
}

fn unet(c: &mut Criterion) {
    let cfg = UnetConfig::named("small").unwrap();
    let net = Unet::new(&cfg, 0).unwrap();
    let x = Var::constant(filled(&[BATCH, SIDE, SIDE, 3], 3));
    let t = Var::constant(Tensor::from_vec(&[BATCH], vec![100.0, 400.0, 700.0, 999.0]));
    let target = Var::constant(filled(&[BATCH, SIDE, SIDE, 3], 4));
    let flops = forward_flops(&cfg, BATCH, SIDE, SIDE).unwrap();
    let mut g = c.benchmark_group("unet_small_b4_64");
    g.sample_size(10);
    g.throughput(Throughput::Elements(flops));
    g.bench_function("forward", |bench| {
        bench.iter(|| {
            let tape = Tape::no_grad();
            black_box(net.forward(&tape, &net.bind(&tape), &x, Some(&t)));
        })
    });
    g.throughput(Throughput::Elements(3 * flops));
    g.bench_function("forward_backward", |bench| {
        bench.iter(|| {
            let tape = Tape::new();
            let params = net.bind(&tape);
            let out = net.forward(&tape, &params, &x, Some(&t));
            let loss = ops::mse(&tape, &out, &target);
            black_box(tape.backward(&loss));
        })
    });
    g.finish();
}

/// Mean time per iteration, in seconds, from criterion's saved estimate.
fn mean_seconds(id: &str) -> Option<f64> {
    let path = Path::new("target/criterion")
        .join(id)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(v["mean"]["point_estimate"].as_f64()? * 1e-9)
}

fn summary() {
    let cfg = UnetConfig::named("small").unwrap();
    let flops = forward_flops(&cfg, BATCH, SIDE, SIDE).unwrap() as f64;
    let sgemm_flops = 2.0 * (SGEMM_SIDE as f64).powi(3);
    let (Some(gemm_s), Some(fwd_s), Some(fb_s)) = (
        mean_seconds("sgemm/1024x1024x1024"),
        mean_seconds("unet_small_b4_64/forward"),
        mean_seconds("unet_small_b4_64/forward_backward"),
    ) else {
        println!(
            "summary: criterion estimates not found (run from the crate root without a filter)"
        );
        return;
    };
    let gemm_rate = sgemm_flops / gemm_s / 1e9;
    let fwd_rate = flops / fwd_s / 1e9;
    let fb_rate = 3.0 * flops / fb_s / 1e9;
    println!("summary (threads: {})", rayon::current_num_threads());
    println!("  SGEMM 1024^3                     {gemm_rate:7.1} GFLOP/s");
    println!(
        "  U-Net small forward, b4 64x64    {fwd_rate:7.1} GFLOP/s  {:5.1}% of SGEMM  ({:.1} ms)",
        100.0 * fwd_rate / gemm_rate,
        fwd_s * 1e3
    );
    println!(
        "  U-Net small fwd+bwd, b4 64x64    {fb_rate:7.1} GFLOP/s  {:5.1}% of SGEMM  ({:.1} ms)",
        100.0 * fb_rate / gemm_rate,
        fb_s * 1e3
    );
}

criterion_group!(benches, sgemm, unet);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}

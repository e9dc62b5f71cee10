//! `--precision bf16` on the CPU: convolutions and attention with their
//! products' operands rounded to bf16, against the f32 references run on
//! the same rounded numbers. Its own test binary because the switch is
//! process-wide.

mod common;

use common::{bf16_rounded as round, randn, rng};
use nadb::cpu::gemm::Kernel;
use nadb::cpu::{attention, conv};

#[test]
fn bf16_products_match_the_references_on_rounded_operands() {
    if Kernel::bf16().is_none() {
        let err = Kernel::use_bf16(true).expect_err("no AVX512-BF16 must refuse bf16");
        assert!(err.contains("AVX512-BF16"), "{err}");
        println!("skip: this CPU has no AVX512-BF16");
        return;
    }
    Kernel::use_bf16(true).expect("the CPU has AVX512-BF16");
    let mut r = rng(11);
    // (n, h, w, cin, cout, k, stride): an odd cin splits bf16 pairs across
    // kernel taps; 3x3 and 1x1; both strides.
    for &(n, h, w, cin, cout, k, stride) in &[
        (1, 9, 7, 3, 40, 3, 1),
        (2, 8, 8, 20, 33, 3, 2),
        (1, 6, 5, 37, 16, 1, 1),
    ] {
        let x = randn(&mut r, &[n, h, w, cin], 1.0);
        let wt = randn(&mut r, &[cout, k, k, cin], 0.5);
        let fast = conv::conv2d(&x, &wt, None, stride);
        let slow = conv::conv2d_reference(&round(&x), &round(&wt), None, stride);
        let d = fast.max_abs_diff(&slow);
        assert!(
            d < 1e-5 * (k * k * cin) as f32,
            "conv {cin}->{cout} k{k} s{stride}: {d}"
        );
    }
    let qkv = randn(&mut r, &[1, 5, 7, 24], 1.0);
    let (fast, _) = attention::attention(&qkv, 4, false);
    let slow = attention::attention_reference(&qkv, 4);
    // Scores, probabilities and values are all rounded: bf16's 3 digits.
    let d = fast.max_abs_diff(&slow);
    assert!(d < 3e-2, "bf16 attention differs by {d}");
    Kernel::use_bf16(false).unwrap();
}

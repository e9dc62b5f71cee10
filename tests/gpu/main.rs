//! GPU tests: every kernel against its CPU reference, at several shapes
//! including odd ones, in f32 (tight) and bf16 (loose) modes; a `tiny`
//! U-Net forward and backward; a NADB sampling run GPU vs CPU.
//!
//! A plain binary (`harness = false`) so that each test prints one line
//! even when it passes or is skipped: without a GPU every test prints
//! "skip NAME: no GPU (why)" and the binary succeeds. With one, a failure
//! prints its message and the binary exits 1 after running the rest.

mod attention;
mod bridge;
mod common;
mod conv;
mod elementwise;
mod norm;
mod optim;
mod resample;
mod unet;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

/// A test: its name and its body (which panics on failure).
pub type Test = (&'static str, fn());

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let tests: Vec<Test> = [
        conv::TESTS,
        norm::TESTS,
        attention::TESTS,
        elementwise::TESTS,
        resample::TESTS,
        bridge::TESTS,
        optim::TESTS,
        unet::TESTS,
    ]
    .concat();
    let tests: Vec<Test> = tests
        .into_iter()
        .filter(|(name, _)| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str())))
        .collect();
    if let Err(why) = nadb::cuda::gpu() {
        for (name, _) in &tests {
            println!("skip {name}: no GPU ({why})");
        }
        return;
    }
    println!("gpu: {}", nadb::cuda::gpu().expect("opened").description);
    let mut failed = Vec::new();
    for (name, body) in &tests {
        let start = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(body));
        let ms = start.elapsed().as_secs_f64() * 1e3;
        match result {
            Ok(()) => println!("ok   {name} ({ms:.0} ms)"),
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                println!("FAIL {name}: {msg}");
                failed.push(*name);
            }
        }
    }
    println!(
        "gpu tests: {} passed, {} failed{}",
        tests.len() - failed.len(),
        failed.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(" ({})", failed.join(", "))
        }
    );
    if !failed.is_empty() {
        std::process::exit(1);
    }
}

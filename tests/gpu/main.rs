//! GPU tests: every kernel against its CPU reference, at several shapes
//! including odd ones, in f32 (tight) and bf16 (loose) modes; a `tiny`
//! U-Net forward and backward; a NADB sampling run GPU vs CPU.
//!
//! A plain binary (`harness = false`) so that each test prints one line
//! even when it passes or is skipped. Without a GPU the tests run on the
//! emulated device (`nadb::emu`); only a build with neither prints
//! "skip NAME: no GPU (why)" for each and succeeds. A failure prints its
//! message and the binary exits 1 after running the rest. Run whole, the
//! suite ends by checking that it launched every kernel the build exports.

mod attention;
mod bridge;
mod common;
mod conv;
mod elementwise;
mod norm;
mod optim;
mod probes;
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
        probes::TESTS,
    ]
    .concat();
    let tests: Vec<Test> = tests
        .into_iter()
        .filter(|(name, _)| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str())))
        .collect();
    // No GPU here: the same tests run on the emulated device.
    if !nadb::cuda::driver_present() && nadb::emu::available() {
        std::env::set_var("NADB_CUDA_EMULATE", "1");
    }
    if let Err(why) = nadb::cuda::gpu() {
        for (name, _) in &tests {
            println!("skip {name}: no GPU ({why})");
        }
        return;
    }
    println!("gpu: {}", nadb::cuda::gpu().expect("opened").description);
    let suite = Instant::now();
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
    // Run whole, the suite must have launched every kernel of the build.
    if filter.is_empty() {
        let start = Instant::now();
        match catch_unwind(every_kernel_launched) {
            Ok(()) => println!(
                "ok   every_kernel_launched ({:.0} ms)",
                start.elapsed().as_secs_f64() * 1e3
            ),
            Err(_) => failed.push("every_kernel_launched"),
        }
    }
    println!(
        "gpu tests: {} passed, {} failed in {:.1} s{}",
        tests.len() + usize::from(filter.is_empty()) - failed.len(),
        failed.len(),
        suite.elapsed().as_secs_f64(),
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

/// Every kernel the device's modules export was launched at least once by
/// the tests above (in both storage types where a kernel has both).
fn every_kernel_launched() {
    let gpu = nadb::cuda::gpu().expect("opened");
    let launched: Vec<String> = gpu
        .kernel_launch_counts()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, _)| name)
        .collect();
    let exported = gpu.kernel_names();
    let never: Vec<&String> = exported.iter().filter(|k| !launched.contains(k)).collect();
    println!(
        "     {} kernels exported, {} launched",
        exported.len(),
        exported.len() - never.len()
    );
    if !never.is_empty() {
        println!("FAIL every_kernel_launched: never launched: {never:?}");
        panic!("kernels never launched");
    }
}

//! How the suite starts, seen from outside: this binary run again as a
//! child with the environment of a broken or absent setup must fail in one
//! clear line instead of skipping.
//!
//! A module the driver cannot load with a device present: the emulated
//! device stands in for the driver (`NADB_EMU_REFUSE_MODULE`, through the
//! same `Driver` seam the CUDA driver sits behind). No GPU with
//! `NADB_REQUIRE_GPU=1`: the child sees no device (`CUDA_VISIBLE_DEVICES`
//! empty, so this holds on a GPU machine too) and may not fall back to the
//! emulated device. A failed launch (`NADB_GPU_TESTS_POISON=1`: one that
//! every device refuses) fails the rest of its process, each later test
//! saying so, and the next process, as the staged run starts one per
//! family, runs clean.

use std::process::Command;

pub const TESTS: &[crate::Test] = &[
    ("harness_refused_module_fails", refused_module_fails),
    (
        "harness_require_gpu_without_gpu_fails",
        require_gpu_without_gpu_fails,
    ),
    (
        "harness_failed_launch_recovers_in_a_fresh_process",
        failed_launch_recovers,
    ),
];

/// Runs this binary on one small family with `env` set (and the
/// variables that choose a device cleared first); returns its exit code
/// and stdout.
fn child(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = Command::new(exe);
    cmd.args(["--family", "resample"]);
    for var in [
        "NADB_CUDA_EMULATE",
        "NADB_EMU_REFUSE_MODULE",
        "NADB_REQUIRE_GPU",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("run the test binary");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Exit 1 and exactly one line, which starts with `start`; returns it.
fn expect_one_failing_line(
    what: &str,
    (code, stdout): (Option<i32>, String),
    start: &str,
) -> String {
    let lines: Vec<&str> = stdout.lines().collect();
    println!("     child ({what}), exit {code:?}: {}", lines.join(" | "));
    assert_eq!(code, Some(1), "{what}: the child's exit code");
    assert_eq!(
        lines.len(),
        1,
        "{what}: the child printed {} lines",
        lines.len()
    );
    assert!(
        lines[0].starts_with(start),
        "{what}: the child's line does not start with {start:?}"
    );
    lines[0].to_string()
}

fn refused_module_fails() {
    let line = expect_one_failing_line(
        "module conv refused, device present",
        child(&[("NADB_CUDA_EMULATE", "1"), ("NADB_EMU_REFUSE_MODULE", "conv")]),
        "FAIL gpu tests cannot start: a device is present but cannot be opened: kernel module conv does not load",
    );
    // What the driver's refusal says too: the build's SASS and PTX ISA.
    if !nadb::cuda::compiled_modules().is_empty() {
        assert!(line.contains("the build holds SASS sm_90, sm_80"), "{line}");
        assert!(line.contains("needs a driver that knows PTX ISA"), "{line}");
    }
}

fn require_gpu_without_gpu_fails() {
    expect_one_failing_line(
        "NADB_REQUIRE_GPU=1, no device",
        child(&[("NADB_REQUIRE_GPU", "1"), ("CUDA_VISIBLE_DEVICES", "")]),
        "FAIL gpu tests cannot start: NADB_REQUIRE_GPU=1 but no GPU: ",
    );
}

fn failed_launch_recovers() {
    // Where this process runs: the GPU, or the emulated device.
    let emulate = if crate::common::emulated() { "1" } else { "0" };
    let (code, stdout) = child(&[
        ("NADB_CUDA_EMULATE", emulate),
        ("NADB_GPU_TESTS_POISON", "1"),
    ]);
    let not_run = stdout
        .lines()
        .filter(|l| {
            l.starts_with("FAIL ")
                && l.contains("not run, the device failed earlier in this process")
        })
        .count();
    println!(
        "     poisoned child, exit {code:?}: {}",
        stdout
            .lines()
            .find(|l| l.starts_with("FAIL "))
            .unwrap_or("no FAIL line")
    );
    assert_eq!(code, Some(1), "the poisoned child's exit code");
    assert_eq!(
        not_run,
        crate::resample::TESTS.len(),
        "every test of the poisoned child says why it did not run"
    );
    let (code, stdout) = child(&[("NADB_CUDA_EMULATE", emulate)]);
    println!(
        "     fresh child, exit {code:?}: {}",
        stdout.lines().last().unwrap_or("")
    );
    assert_eq!(code, Some(0), "the next process: {stdout}");
}

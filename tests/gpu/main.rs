//! GPU tests: every kernel against its CPU reference, at several shapes
//! including odd ones, in f32 (tight) and bf16 (loose) modes; a `tiny`
//! U-Net forward and backward; a NADB sampling run GPU vs CPU; the capture
//! rules; how the suite itself starts.
//!
//! A plain binary (`harness = false`) so that each test prints one line
//! even when it passes. The first line names the device, its compute
//! capability, the driver's and the build's CUDA versions (or says the
//! device is emulated). Without a GPU the tests run on the emulated device
//! (`nadb::emu`). A failure prints its message and the binary exits 1.
//!
//! Starting: no CUDA driver or no device is an absence: the emulated device
//! runs the tests, or, in a build without it, each test prints "skip". A
//! device that is there but cannot be opened (a module the driver cannot
//! load, a build without kernels) is a failure, with the reason.
//! `NADB_REQUIRE_GPU=1` (the staged GPU run sets it) turns every absence
//! and every fallback to the emulated device into a failure, in one line.
//!
//! Arguments: `--device-info` prints the first line (or why there is no
//! device) and exits; `--family NAME` (repeatable; `--list-families` names them)
//! runs one family of tests, so that each can run in its own process (a
//! failed launch leaves the device failed for the rest of its process:
//! the next family starts clean); other words filter test names by
//! substring. Run whole, the suite ends by checking that it launched every
//! kernel the build exports; run by family, `--launched FILE` appends the
//! kernels each process launched to FILE and `--check-launched FILE`
//! checks their union.

mod attention;
mod bridge;
mod common;
mod conv;
mod elementwise;
mod graph;
mod harness;
mod norm;
mod optim;
mod probes;
mod resample;
mod unet;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

/// A test: its name and its body (which panics on failure).
pub type Test = (&'static str, fn());

/// The families, each run as a unit (`--family`), in suite order.
const FAMILIES: &[(&str, &[Test])] = &[
    ("conv", conv::TESTS),
    ("norm", norm::TESTS),
    ("attention", attention::TESTS),
    ("elementwise", elementwise::TESTS),
    ("resample", resample::TESTS),
    ("bridge", bridge::TESTS),
    ("optim", optim::TESTS),
    ("graph", graph::TESTS),
    ("probes", probes::TESTS),
    ("harness", harness::TESTS),
    // Last: the slowest on the emulated device.
    ("unet", unet::TESTS),
];

/// What the command line asked for.
struct Args {
    device_info: bool,
    families: Vec<String>,
    filter: Vec<String>,
    launched: Option<String>,
    check_launched: Option<String>,
}

fn parse_args() -> Args {
    let mut args = Args {
        device_info: false,
        families: Vec::new(),
        filter: Vec::new(),
        launched: None,
        check_launched: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |what: &str| {
            it.next()
                .unwrap_or_else(|| fail_start(&format!("{what} needs a value")))
        };
        match a.as_str() {
            "--family" => args.families.push(value("--family")),
            "--device-info" => args.device_info = true,
            "--launched" => args.launched = Some(value("--launched")),
            "--check-launched" => args.check_launched = Some(value("--check-launched")),
            "--list-families" => {
                for (name, tests) in FAMILIES {
                    println!("{name} ({} tests)", tests.len());
                }
                std::process::exit(0);
            }
            // cargo test passes harness flags (--nocapture, ...): ignored.
            flag if flag.starts_with('-') => {}
            word => args.filter.push(word.to_string()),
        }
    }
    for f in &args.families {
        if !FAMILIES.iter().any(|(name, _)| name == f) {
            let names: Vec<&str> = FAMILIES.iter().map(|(n, _)| *n).collect();
            fail_start(&format!(
                "no test family {f:?} (families: {})",
                names.join(", ")
            ));
        }
    }
    args
}

/// The one line of a suite that cannot start, and exit 1.
fn fail_start(why: &str) -> ! {
    println!("FAIL gpu tests cannot start: {why}");
    std::process::exit(1);
}

/// Whether every absence is a failure (`NADB_REQUIRE_GPU=1`).
fn gpu_required() -> bool {
    std::env::var("NADB_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// Opens the device the tests run on, or says why they cannot run: exits 1
/// where that is a failure, returns `Err` (skip) where it is an absence.
fn open_device() -> Result<&'static nadb::cuda::Gpu, String> {
    let required = gpu_required();
    if required && nadb::cuda::emulation_requested() {
        fail_start("NADB_REQUIRE_GPU=1 asks for a real GPU, but NADB_CUDA_EMULATE=1 asks for the emulated device");
    }
    // No GPU here: the same tests run on the emulated device, unless a real
    // one is required.
    if !required && !nadb::cuda::driver_present() && nadb::emu::available() {
        std::env::set_var("NADB_CUDA_EMULATE", "1");
    }
    match nadb::cuda::open() {
        Ok(gpu) => Ok(gpu),
        Err(e) if e.device_present => fail_start(&format!(
            "a device is present but cannot be opened: {}",
            e.reason
        )),
        Err(e) if required => fail_start(&format!("NADB_REQUIRE_GPU=1 but no GPU: {}", e.reason)),
        Err(e) => Err(e.reason.clone()),
    }
}

fn main() {
    let args = parse_args();
    let gpu = open_device();
    if args.device_info {
        match gpu {
            Ok(gpu) => println!("{}", first_line(gpu)),
            Err(why) => fail_start(&format!("no GPU: {why}")),
        }
        return;
    }
    if let Some(file) = &args.check_launched {
        let gpu = gpu.unwrap_or_else(|why| fail_start(&why));
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|e| fail_start(&format!("--check-launched {file}: {e}")));
        let launched: Vec<String> = text.lines().map(str::to_string).collect();
        let ok = report("every_kernel_launched", || {
            every_kernel_launched(gpu, &launched)
        });
        std::process::exit(i32::from(!ok));
    }
    let tests: Vec<(&str, Test)> = FAMILIES
        .iter()
        .filter(|(family, _)| args.families.is_empty() || args.families.iter().any(|f| f == family))
        .flat_map(|(family, tests)| tests.iter().map(move |t| (*family, *t)))
        .filter(|(_, (name, _))| {
            args.filter.is_empty() || args.filter.iter().any(|f| name.contains(f.as_str()))
        })
        .collect();
    let gpu = match gpu {
        Ok(gpu) => gpu,
        Err(why) => {
            for (_, (name, _)) in &tests {
                println!("skip {name}: no GPU ({why})");
            }
            return;
        }
    };
    println!("{}", first_line(gpu));
    if std::env::var("NADB_GPU_TESTS_POISON").is_ok_and(|v| v == "1") {
        poison(gpu);
    }
    let suite = Instant::now();
    // Per family: (passed, failed).
    let mut counts: Vec<(&str, usize, usize)> = Vec::new();
    let mut failed = Vec::new();
    for (family, (name, body)) in &tests {
        if counts.last().is_none_or(|c| c.0 != *family) {
            counts.push((family, 0, 0));
        }
        let count = counts.last_mut().expect("pushed");
        // A failed device stays failed in this process (see nadb::cuda).
        let ok = match gpu.check() {
            Err(e) => {
                println!("FAIL {name}: not run, the device failed earlier in this process ({e})");
                false
            }
            Ok(()) => report(name, *body),
        };
        if ok {
            count.1 += 1;
        } else {
            count.2 += 1;
            failed.push(*name);
        }
    }
    let whole = args.families.is_empty() && args.filter.is_empty();
    let launched: Vec<String> = gpu
        .kernel_launch_counts()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, _)| name)
        .collect();
    if let Some(file) = &args.launched {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .unwrap_or_else(|e| fail_start(&format!("--launched {file}: {e}")));
        for k in &launched {
            writeln!(f, "{k}").unwrap_or_else(|e| fail_start(&format!("--launched {file}: {e}")));
        }
    }
    // Run whole, the suite must have launched every kernel of the build.
    if whole {
        if report("every_kernel_launched", || {
            every_kernel_launched(gpu, &launched)
        }) {
            counts.push(("coverage", 1, 0));
        } else {
            counts.push(("coverage", 0, 1));
            failed.push("every_kernel_launched");
        }
    }
    for (family, passed, failed) in &counts {
        println!("family {family}: {passed} passed, {failed} failed");
    }
    let passed: usize = counts.iter().map(|c| c.1).sum();
    println!(
        "gpu tests: {passed} passed, {} failed in {:.1} s{}",
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

/// Fails the device for the rest of this process with a launch every
/// device refuses (1025 threads a block), through the sticky launch path:
/// `NADB_GPU_TESTS_POISON=1`, for the harness tests of the recovery.
fn poison(gpu: &nadb::cuda::Gpu) {
    use nadb::tensor::{DType, Tensor};
    let x = Tensor::zeros(&[1025]).to_cuda(DType::F32).expect("upload");
    let arg = nadb::cuda::Arg::Ptr(x.device_ptr());
    let args = [arg, arg, nadb::cuda::Arg::I32(0)];
    gpu.launch_named("probe_barrier", (1, 1, 1), (1025, 1, 1), 0, &args);
}

/// The device, its compute capability, the driver's and the build's
/// versions (or that the device is emulated).
fn first_line(gpu: &nadb::cuda::Gpu) -> String {
    format!("gpu: {}; {}", gpu.description, gpu.versions)
}

/// Runs one test, printing `ok` with its time or `FAIL` with its message.
fn report(name: &str, body: impl FnOnce()) -> bool {
    let start = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(body));
    let ms = start.elapsed().as_secs_f64() * 1e3;
    match result {
        Ok(()) => {
            println!("ok   {name} ({ms:.0} ms)");
            true
        }
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            println!("FAIL {name}: {msg}");
            false
        }
    }
}

/// Every kernel the device's modules export is in `launched` (in both
/// storage types where a kernel has both).
fn every_kernel_launched(gpu: &nadb::cuda::Gpu, launched: &[String]) {
    let exported = gpu.kernel_names();
    let never: Vec<&String> = exported.iter().filter(|k| !launched.contains(k)).collect();
    println!(
        "     {} kernels exported, {} launched",
        exported.len(),
        exported.len() - never.len()
    );
    assert!(never.is_empty(), "never launched: {never:?}");
}

//! Compiles every `kernels/*.cu` twice: to PTX for the GPU machines
//! (sm_90) with nvcc, when one is found, and for the host with the C++
//! compiler (the `cc` crate), as the emulated device's kernels (src/emu/,
//! kernels/host/). Tells the crate which kernels it embeds.
//!
//! nvcc is looked for in `NVCC`, `CUDA_HOME`/`CUDA_PATH`, `PATH`, then the
//! project's own toolchain (`.toolchain/cuda`, scripts/install-cuda-toolchain.sh). Without
//! nvcc the build succeeds and embeds no PTX; the CUDA backend then reports
//! that this build has no kernels.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn find_nvcc() -> Option<PathBuf> {
    let exe = |dir: PathBuf| dir.join("nvcc");
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = env::var_os("NVCC") {
        candidates.push(PathBuf::from(p));
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(p) = env::var_os(var) {
            candidates.push(exe(PathBuf::from(p).join("bin")));
        }
    }
    if let Some(path) = env::var_os("PATH") {
        candidates.extend(env::split_paths(&path).map(exe));
    }
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    candidates.push(manifest.join(".toolchain/cuda/bin/nvcc"));
    candidates.into_iter().find(|p| p.is_file())
}

fn main() {
    println!("cargo:rerun-if-changed=kernels");
    for var in ["NVCC", "CUDA_HOME", "CUDA_PATH"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let mut sources: Vec<PathBuf> = fs::read_dir("kernels")
        .map(|dir| {
            dir.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "cu"))
                .collect()
        })
        .unwrap_or_default();
    sources.sort();
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets it"));
    build_emulator(&sources, &out);
    let nvcc = find_nvcc();
    let mut compiled = Vec::new();
    for src in &sources {
        println!("cargo:rerun-if-changed={}", src.display());
        let Some(nvcc) = &nvcc else { continue };
        let stem = src
            .file_stem()
            .expect("a .cu file has a stem")
            .to_string_lossy()
            .into_owned();
        let ptx = out.join(format!("{stem}.ptx"));
        compile(nvcc, src, &ptx);
        compiled.push((stem, ptx));
    }
    if nvcc.is_none() && !sources.is_empty() {
        println!(
            "cargo:warning=nvcc not found: {} CUDA kernel files not compiled (scripts/install-cuda-toolchain.sh installs the pinned compiler)",
            sources.len()
        );
    }
    // The table the CUDA backend loads its modules from.
    let table: String = compiled
        .iter()
        .map(|(stem, ptx)| {
            format!(
                "    ({stem:?}, include_str!({:?})),\n",
                ptx.display().to_string()
            )
        })
        .collect();
    fs::write(
        out.join("kernels.rs"),
        format!("/// (module name, PTX) of every compiled kernel file.\npub const PTX_MODULES: &[(&str, &str)] = &[\n{table}];\n"),
    )
    .expect("write kernels.rs");
}

fn compile(nvcc: &Path, src: &Path, ptx: &Path) {
    let status = Command::new(nvcc)
        .args([
            "-ptx",
            "-arch=sm_90",
            "-O3",
            "-std=c++17",
            "-lineinfo",
            "-o",
        ])
        .arg(ptx)
        .arg(src)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", nvcc.display()));
    assert!(status.success(), "nvcc failed on {}", src.display());
    // One build note per kernel: registers, shared memory and spills.
    let report = Command::new(nvcc)
        .args([
            "-cubin",
            "-arch=sm_90",
            "-O3",
            "-std=c++17",
            "-Xptxas=-v",
            "-o",
            "/dev/null",
        ])
        .arg(src)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", nvcc.display()));
    let (mut kernel, mut spills) = (String::new(), String::new());
    for line in String::from_utf8_lossy(&report.stderr).lines() {
        let line = line.trim_start_matches("ptxas info    : ").trim();
        if let Some(rest) = line.strip_prefix("Compiling entry function '") {
            kernel = rest.split('\'').next().unwrap_or_default().to_string();
        } else if line.contains("spill stores") {
            spills = line.to_string();
        } else if let Some(used) = line.strip_prefix("Used ") {
            println!("cargo:warning=ptxas {kernel}: {used}; {spills}");
        }
    }
}

/// The kernels a `.cu` file exports: `EXPORT_F32_BF16(NAME, ...)` gives
/// NAME_f32 and NAME_bf16, `extern "C" __global__ void NAME(` gives NAME.
fn exported_kernels(source: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in source.lines().map(str::trim_start) {
        if let Some(rest) = line.strip_prefix("EXPORT_F32_BF16(") {
            let name = rest.split(',').next().unwrap_or_default().trim();
            names.push(format!("{name}_f32"));
            names.push(format!("{name}_bf16"));
        } else if let Some(rest) = line.strip_prefix("extern \"C\" __global__ void ") {
            names.push(
                rest.split('(')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            );
        }
    }
    names
}

/// `extern __shared__ TYPE NAME[]` declarations: (type, name), once each.
fn dynamic_shared_arrays(source: &str, found: &mut Vec<(String, String)>) {
    for line in source.lines() {
        let Some(rest) = line.trim_start().strip_prefix("extern __shared__ ") else {
            continue;
        };
        let decl = rest.split('[').next().unwrap_or_default();
        let mut words: Vec<&str> = decl.split_whitespace().collect();
        let Some(name) = words.pop() else { continue };
        let entry = (words.join(" "), name.to_string());
        if !found.contains(&entry) {
            found.push(entry);
        }
    }
}

/// Compiles the kernels for the host, instrumented (every load and store
/// calls the runtime's checks), with the runtime and a generated table of
/// every exported kernel, into one static library; sets `cfg(nadb_emu)`.
/// Without a working C++ compiler the crate builds without the emulator.
fn build_emulator(sources: &[PathBuf], out: &Path) {
    println!("cargo::rustc-check-cfg=cfg(nadb_emu)");
    println!("cargo:rerun-if-changed=kernels/host");
    let dir = out.join("emu");
    fs::create_dir_all(&dir).expect("create OUT_DIR/emu");
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let host = root.join("kernels/host");
    let (mut wrappers, mut modules, mut arrays) = (Vec::new(), Vec::new(), Vec::new());
    for src in sources {
        let stem = src
            .file_stem()
            .expect("a .cu file")
            .to_string_lossy()
            .into_owned();
        let text = fs::read_to_string(src).expect("read a kernel file");
        dynamic_shared_arrays(&text, &mut arrays);
        let entries: String = exported_kernels(&text)
            .iter()
            .map(|k| format!("    EMU_KERNEL({k}),\n"))
            .collect();
        // Kernels exported from inside a named namespace are found through it.
        let usings: String = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("namespace "))
            .filter_map(|rest| rest.strip_suffix('{'))
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(|name| format!("using namespace {name};\n"))
            .collect();
        let wrapper = dir.join(format!("{stem}.cpp"));
        fs::write(
            &wrapper,
            format!(
                "#include {:?}\n{usings}extern \"C\" const emu::KernelEntry emu_module_{stem}[] = {{\n{entries}    {{nullptr, nullptr, nullptr, nullptr}},\n}};\n",
                root.join(src).display().to_string()
            ),
        )
        .expect("write a kernel wrapper");
        wrappers.push(wrapper);
        modules.push(stem);
    }
    let declarations: String = modules
        .iter()
        .map(|m| format!("extern \"C\" const emu::KernelEntry emu_module_{m}[];\n"))
        .collect();
    let table: String = modules
        .iter()
        .map(|m| format!("emu_module_{m}, "))
        .collect();
    let definitions: String = arrays
        .iter()
        .map(|(ty, name)| {
            format!("alignas(16) thread_local {ty} {name}[EMU_DYNAMIC_CAPACITY / sizeof({ty})];\n")
        })
        .collect();
    let regions: String = arrays
        .iter()
        .map(|(_, name)| format!("{{{name}, sizeof {name}}}, "))
        .collect();
    let registry = dir.join("registry.cpp");
    fs::write(
        &registry,
        format!(
            "#include {:?}\n#define EMU_DYNAMIC_CAPACITY 232448\n{declarations}\
             extern \"C\" const emu::KernelEntry* const emu_kernel_modules[] = {{{table}nullptr}};\n\
             {definitions}\
             // Addresses in the calling host thread (the arrays are thread_local).\n\
             extern \"C\" const emu::DynamicRegion* emu_dynamic_regions(size_t* count) {{\n\
             \x20   thread_local emu::DynamicRegion r[] = {{{regions}{{nullptr, 0}}}};\n\
             \x20   *count = sizeof r / sizeof r[0] - 1;\n\
             \x20   return r;\n}}\n",
            host.join("cuda_host.h").display().to_string()
        ),
    )
    .expect("write the kernel registry");
    let base = || {
        let mut b = cc::Build::new();
        b.cpp(true)
            .std("c++17")
            .opt_level(2)
            .flag("-ffp-contract=off")
            // extern __shared__ arrays are thread_local with no initialiser.
            .flag("-fno-extern-tls-init")
            .flag_if_supported("-Wno-unknown-pragmas")
            .cargo_warnings(false);
        b
    };
    let mut kernels = base();
    // fmaf as one instruction where the building (and testing) CPU has it,
    // not a library call.
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        kernels.flag("-mfma");
    }
    let kernels = kernels
        .flag("-fsanitize=kernel-address")
        .flag("--param=asan-instrumentation-with-call-threshold=0")
        .flag("--param=asan-stack=0")
        .flag("--param=asan-globals=0")
        .files(&wrappers)
        .try_compile_intermediates();
    let built = kernels.and_then(|objects| {
        base()
            .file(host.join("emu_runtime.cpp"))
            .file(&registry)
            .objects(objects)
            .try_compile("nadb_emu")
    });
    match built {
        Ok(()) => println!("cargo:rustc-cfg=nadb_emu"),
        Err(e) => println!(
            "cargo:warning=no emulated device in this build: the C++ compiler failed on kernels/ ({e})"
        ),
    }
}

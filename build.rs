//! Compiles every `kernels/*.cu` twice: with nvcc, when one is found, to a
//! fatbin per file for the GPU machines (SASS for sm_90 and sm_80, so the
//! driver loads them without a JIT on H100/H200 and A100, plus compute_90
//! PTX that newer cards JIT), and for the host with the C++ compiler (the
//! `cc` crate), as the emulated device's kernels (src/emu/,
//! kernels/host/). Tells the crate which kernels it embeds.
//!
//! nvcc is looked for in `NVCC`, `CUDA_HOME`/`CUDA_PATH`, `PATH`, then the
//! project's own toolchain (`.toolchain/cuda`, scripts/install-cuda-toolchain.sh). Without
//! nvcc the build succeeds and embeds no kernels; the CUDA backend then
//! reports that this build has none.

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

/// The real GPUs the fatbins carry SASS for (`sm_XY`), newest first; the
/// PTX is for the first one's virtual architecture.
const SASS_ARCHS: [&str; 2] = ["90", "80"];

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
        let isa = compile(nvcc, src, &out, &stem);
        let kernels = exported_kernels(&fs::read_to_string(src).expect("read a kernel file"));
        compiled.push((stem, isa, kernels));
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
        .map(|(stem, isa, kernels)| {
            let fatbin = out.join(format!("{stem}.fatbin"));
            format!(
                "    Module {{ name: {stem:?}, fatbin: include_bytes!({:?}), ptx_isa: {isa:?}, kernels: &{kernels:?} }},\n",
                fatbin.display().to_string()
            )
        })
        .collect();
    let archs: Vec<String> = SASS_ARCHS.iter().map(|a| format!("sm_{a}")).collect();
    let release = nvcc.as_deref().map(nvcc_release).unwrap_or_default();
    fs::write(
        out.join("kernels.rs"),
        format!(
            "/// Every compiled kernel file.\npub const MODULES: &[Module] = &[\n{table}];\n\
             /// The GPUs the fatbins hold SASS for.\npub const SASS: &[&str] = &{archs:?};\n\
             /// The virtual architecture of their PTX.\npub const PTX_ARCH: &str = \"compute_{}\";\n\
             /// The nvcc that compiled them (empty: none).\npub const NVCC: &str = {release:?};\n",
            SASS_ARCHS[0]
        ),
    )
    .expect("write kernels.rs");
}

/// nvcc's version (`V13.0.88` from its `--version`).
fn nvcc_release(nvcc: &Path) -> String {
    let out = Command::new(nvcc)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", nvcc.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.contains("release"))
        .and_then(|l| l.rsplit(", ").next())
        .unwrap_or("unknown")
        .trim_start_matches('V')
        .to_string()
}

/// Compiles `src` to `OUT_DIR/<stem>.fatbin` (SASS for every `SASS_ARCHS`,
/// PTX for the first) and returns the PTX ISA version it was written in
/// (`.version` of the kept PTX). Prints ptxas's registers, shared memory
/// and spills per sm_90 kernel as build notes.
fn compile(nvcc: &Path, src: &Path, out: &Path, stem: &str) -> String {
    let keep = out.join(format!("nvcc-{stem}"));
    fs::create_dir_all(&keep).expect("create nvcc's keep folder");
    let mut cmd = Command::new(nvcc);
    cmd.arg("-fatbin");
    for a in SASS_ARCHS {
        cmd.arg(format!("-gencode=arch=compute_{a},code=sm_{a}"));
    }
    let ptx_arch = SASS_ARCHS[0];
    cmd.arg(format!(
        "-gencode=arch=compute_{ptx_arch},code=compute_{ptx_arch}"
    ))
    .args([
        "-O3",
        "-std=c++17",
        "-lineinfo",
        "-Xptxas=-v",
        "--keep",
        "--keep-dir",
    ])
    .arg(&keep)
    .arg("-o")
    .arg(out.join(format!("{stem}.fatbin")))
    .arg(src);
    let report = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", nvcc.display()));
    let stderr = String::from_utf8_lossy(&report.stderr);
    assert!(
        report.status.success(),
        "nvcc failed on {}:\n{stderr}",
        src.display()
    );
    // One build note per sm_90 kernel: registers, shared memory and spills.
    let (mut kernel, mut spills) = (None, String::new());
    for line in stderr.lines() {
        let line = line.trim_start_matches("ptxas info    : ").trim();
        if let Some(rest) = line.strip_prefix("Compiling entry function '") {
            let (name, target) = rest.split_once("' for '").unwrap_or((rest, ""));
            kernel = target
                .starts_with(&format!("sm_{ptx_arch}"))
                .then(|| name.to_string());
        } else if line.contains("spill stores") {
            spills = line.to_string();
        } else if let (Some(k), Some(used)) = (&kernel, line.strip_prefix("Used ")) {
            println!("cargo:warning=ptxas {k}: {used}; {spills}");
        }
    }
    let ptx = keep.join(format!("{stem}.compute_{ptx_arch}.ptx"));
    let ptx =
        fs::read_to_string(&ptx).unwrap_or_else(|e| panic!("nvcc kept no {}: {e}", ptx.display()));
    let isa = ptx
        .lines()
        .find_map(|l| l.trim().strip_prefix(".version "))
        .unwrap_or_else(|| panic!("{stem}'s PTX has no .version line"))
        .trim()
        .to_string();
    fs::remove_dir_all(&keep).ok();
    isa
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

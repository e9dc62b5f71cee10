//! Compiles every `kernels/*.cu` to PTX for the GPU machines (sm_90) with
//! nvcc, when one is found, and tells the crate which kernels it embeds.
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

#!/usr/bin/env bash
# Builds, here, everything a GPU machine runs (it has the CUDA driver and
# Python with PyTorch, but no Rust toolchain and no network) and stages it
# in stage/ (ignored by git) with stage/run.sh, the one command that runs
# every GPU test and benchmark and writes the results into a folder:
#
#   scripts/stage-gpu.sh              # here: builds and stages
#   stage/run.sh OUT_DIR              # there: tests + benchmarks -> OUT_DIR
#
# The kernels are compiled by build.rs with the pinned nvcc (installed by
# scripts/install-cuda-toolchain.sh if missing) into fatbins with sm_90 and
# sm_80 SASS; binaries are stripped. compute-sanitizer 13.0 (from the
# pinned nvidia-cuda-sanitizer-api wheel, which the install script adds)
# is staged compressed when it fits: the whole checkout travels to the GPU
# machine with stage/, 64 MiB together, so stage/ gets what the tracked
# files leave (STAGE_BUDGET_MIB overrides).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/install-cuda-toolchain.sh >/dev/null
cargo build --release --bin nadb
gpu_tests=$(cargo test --release --test gpu --no-run --message-format=json 2>/dev/null |
    python3 -c 'import sys, json
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "gpu" and m.get("executable"):
        print(m["executable"])')
[[ -x $gpu_tests ]] || { echo "error: the gpu test executable was not built" >&2; exit 1; }
target="${CARGO_TARGET_DIR:-$root/target}"
rm -rf stage
mkdir -p stage
strip -o stage/nadb "$target/release/nadb"
strip -o stage/gpu-tests "$gpu_tests"
tracked=$(git ls-files -z | du -cb --files0-from=- | tail -n 1 | cut -f 1)
budget=$(( ${STAGE_BUDGET_MIB:-$(( 64 - tracked / 1048576 - 1 ))} * 1048576 ))
sanitizer="$root/.toolchain/cuda"
if [[ -x $sanitizer/bin/compute-sanitizer ]]; then
    tar -C "$sanitizer" -cJf stage/compute-sanitizer.tar.xz bin/compute-sanitizer \
        bin/libsanitizer-collection.so lib/libInterceptorInjectionTarget.so \
        lib/libTreeLauncherPlaceholder.so lib/libTreeLauncherTargetInjection.so \
        lib/libTreeLauncherTargetUpdatePreloadInjection.so lib/libsanitizer-collection.so \
        lib/libsanitizer-public.so
    if (( $(du -cb stage/* | tail -n 1 | cut -f 1) > budget )); then
        rm stage/compute-sanitizer.tar.xz
        echo "note: compute-sanitizer not staged (over the $(( budget / 1048576 )) MiB the checkout leaves)"
    fi
fi
cp scripts/gpu-run.sh stage/run.sh
chmod +x stage/run.sh
du -sh stage/*
size=$(du -cb stage/* | tail -n 1 | cut -f 1)
echo "staged: $(( size / 1048576 )) MiB in stage/, $(( (size + tracked) / 1048576 )) MiB with the tracked files"
(( size <= budget )) || { echo "error: stage/ is over its $(( budget / 1048576 )) MiB" >&2; exit 1; }
echo "on the GPU machine: stage/run.sh \"\$OUT\" (carry 'stage')"

#!/usr/bin/env bash
# Builds, here, everything a GPU machine runs (it has the CUDA driver and
# Python with PyTorch, but no Rust toolchain and no network) and stages it
# in stage/ (ignored by git) with stage/run.sh, the one command that runs
# every GPU test and benchmark and writes the results into a folder:
#
#   scripts/stage-gpu.sh              # here: builds and stages (~64 MiB cap)
#   stage/run.sh OUT_DIR              # there: tests + benchmarks -> OUT_DIR
#
# The kernels are compiled by build.rs with the pinned nvcc (installed by
# scripts/install-cuda-toolchain.sh if missing); binaries are stripped.
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
rm -rf stage
mkdir -p stage
strip -o stage/nadb target/release/nadb
strip -o stage/gpu-tests "$gpu_tests"
cat > stage/run.sh <<'RUN'
#!/usr/bin/env bash
# Every GPU test and benchmark of this build; results in $1 (or $OUT).
# Budget: well under 8 minutes on an H100.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-${OUT:?usage: run.sh OUT_DIR}}"
mkdir -p "$out"
status=0
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; nvcc --version | tail -n 1; } \
    > "$out/machine.txt" 2>&1
echo "== GPU tests"
timeout 300 "$here/gpu-tests" 2>&1 | tee "$out/gpu-tests.txt"
[[ ${PIPESTATUS[0]} == 0 ]] || status=1
echo "== nadb bench (base, bf16, then f32)"
for precision in bf16 f32; do
    timeout 120 "$here/nadb" bench --device cuda --precision "$precision" --config base \
        --size 256 --nfe 5,10 --batch 16 --train-batch 64 --train-size 64 --iters 10 \
        --force -o "$out/bench-base-$precision.md" 2>&1 | tee -a "$out/bench.log"
    [[ ${PIPESTATUS[0]} == 0 ]] || status=1
done
echo "== nadb restore --profile (the shipped sr4-bicubic weights, NFE 10, batch 1)"
repo="$here/.."
example="$repo/examples/sr4-bicubic-input.png"
if [[ -f $example && -f $repo/weights/sr4-bicubic-nadb.safetensors ]]; then
    (cd "$repo" && timeout 60 "$here/nadb" restore --device cuda --task sr4-bicubic --nfe 10 \
        --profile --force "$example" -o "$out/restored") 2>&1 | tee "$out/restore-profile.txt"
    [[ ${PIPESTATUS[0]} == 0 ]] || status=1
else
    echo "no shipped sr4-bicubic weights or example image: skipped" | tee "$out/restore-profile.txt"
fi
exit $status
RUN
chmod +x stage/run.sh
du -sh stage/*
echo "staged: stage/run.sh OUT_DIR runs everything (carry 'stage' to the GPU machine)"

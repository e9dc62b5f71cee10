#!/usr/bin/env bash
# The CPU side by side (engine.md, "Performance protocol"): `nadb bench` and
# the PyTorch twin's bench (benches/twin/bench.py, eager, channels_last) with
# the same arguments, one after the other on this machine, ROUNDS times in
# alternation (default 3: a shared machine's speed drifts by tens of
# percent over minutes, and alternating exposes both sides to the same
# drift), then one table with both medians and the ratio per row, the CPU
# model and its SIMD features (benches/twin/side_by_side.py). Installs PyTorch into .toolchain/torch-venv
# the first time (a few GB). Writes everything into OUT (default
# benches/results/cpu-vs-pytorch).
#
#   [ROUNDS=3] [PRECISION=f32] scripts/bench-vs-pytorch.sh [OUT [BENCH ARGUMENTS...]]
#
# The default arguments are the CPU issue's: small config, 256x256
# restoration at NFE 1 and batch 1, a 64x64 training step at batch 4, 3
# timed runs each; arguments after OUT replace them (both benches take the
# same flags). f32 on both sides, or bf16 with PRECISION=bf16 (the engine's
# `--precision bf16`: products' operands rounded to bf16, f32 sums; PyTorch
# bf16 autocast), which needs a CPU with AVX512-BF16.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/benches/results/cpu-vs-pytorch}"
precision=${PRECISION:-f32}
rounds=${ROUNDS:-3}
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS=$rounds: must be a whole number of rounds, 1 or more" >&2; exit 2; }
[[ $precision == f32 || $precision == bf16 ]] || { echo "PRECISION=$precision: must be f32 or bf16" >&2; exit 2; }
args=(--config small --size 256 --nfe 1 --batch 1 --train-batch 4 --train-size 64 --iters 3)
(( $# > 1 )) && args=("${@:2}")
venv="$root/.toolchain/torch-venv"
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check torch numpy safetensors
fi
mkdir -p "$out"
(cd "$root" && cargo build --release --quiet)
target_dir=$(cd "$root" && cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
nadb_tables=() torch_tables=() time_logs=()
for round in $(seq 1 "$rounds"); do
    tag="$precision-$round"
    /usr/bin/time -v "$target_dir/release/nadb" bench "${args[@]}" --device cpu --precision "$precision" \
        --force -o "$out/nadb-$tag.md.tmp" 2> "$out/nadb-$tag.time.log" >/dev/null
    mv "$out/nadb-$tag.md.tmp" "$out/nadb-$tag.md"
    "$venv/bin/python" "$root/benches/twin/bench.py" "${args[@]}" --device cpu --precision "$precision" \
        --no-compile --warmup 1 --parts latency,train --out "$out/torch-$tag.md" >/dev/null
    nadb_tables+=("$out/nadb-$tag.md") torch_tables+=("$out/torch-$tag.md") time_logs+=("$out/nadb-$tag.time.log")
done
join() { local IFS=,; echo "$*"; }
"$venv/bin/python" "$root/benches/twin/side_by_side.py" "$(join "${nadb_tables[@]}")" \
    "$(join "${torch_tables[@]}")" "$(join "${time_logs[@]}")" | tee "$out/side-by-side-$precision.md"

#!/usr/bin/env bash
# stage/run.sh (scripts/stage-gpu.sh copies this file there): every GPU
# test and benchmark of the staged build, on the GPU machine; results in
# $1 (or $OUT). Steps, inside a budget of BUDGET_S seconds (420: under 8
# minutes on an H100), each timed out to what is left of it:
#
#  1. the device (gpu-tests --device-info, NADB_REQUIRE_GPU=1): without a
#     usable GPU it says so in one line, runs nothing and exits 2;
#  2. each test family in its own process, NADB_REQUIRE_GPU=1 (a failed
#     launch leaves the device failed for the rest of its process: the
#     next family starts from a fresh one), then every_kernel_launched over
#     the kernels all of them launched;
#  3. compute-sanitizer memcheck, racecheck and synccheck on a small subset
#     of the tests, with the first one found: PATH, CUDA_HOME, /usr/local/cuda,
#     beside nvcc, else the copy staged beside this script;
#  4. nadb bench (base, bf16 then f32) and nadb restore --profile.
#
# $OUT gets summary.txt (the device, pass/fail counts per family, each
# sanitizer tool's errors, the benchmarks' status), gpu-tests.txt,
# sanitizer.txt, bench-base-bf16.md, bench-base-f32.md, bench.log and
# restore-profile.txt. Exit 0 when everything passed, 1 when anything
# failed, 2 without a GPU.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-${OUT:?usage: run.sh OUT_DIR}}"
mkdir -p "$out"
start=$SECONDS
budget=${BUDGET_S:-420}
# Seconds for the next command: `cap`, or what is left of the budget.
limit() {
    local cap=$1 left=$((budget - (SECONDS - start)))
    ((left < cap)) && cap=$left
    ((cap < 1)) && cap=1
    echo "$cap"
}
summary="$out/summary.txt"
: >"$summary"
note() { echo "$*" | tee -a "$summary"; }
export NADB_REQUIRE_GPU=1
unset NADB_CUDA_EMULATE NADB_EMU_REFUSE_MODULE
tests="$here/gpu-tests"

if ! info=$("$tests" --device-info 2>&1); then
    note "run.sh: no usable GPU here, nothing run (${info#FAIL gpu tests cannot start: })"
    exit 2
fi
note "$info"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 |
    sed 's/^/nvidia-smi: /' >>"$summary"
status=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== GPU tests, one process per family"
: >"$out/gpu-tests.txt"
for family in $("$tests" --list-families | cut -d ' ' -f 1); do
    if (($(limit 5) < 5)); then
        note "family $family: not run (out of time)"
        status=1
        continue
    fi
    t0=$SECONDS
    timeout "$(limit 240)" "$tests" --family "$family" --launched "$tmp/launched.txt" \
        >"$tmp/family.txt" 2>&1
    rc=$?
    tee -a "$out/gpu-tests.txt" <"$tmp/family.txt"
    line=$(grep "^family $family:" "$tmp/family.txt")
    if [[ -z $line ]]; then
        line="family $family: did not finish (exit $rc$( ((rc == 124)) && echo ', timed out'))"
    fi
    note "$line in $((SECONDS - t0)) s"
    ((rc == 0)) || status=1
done
if "$tests" --check-launched "$tmp/launched.txt" >"$tmp/coverage.txt" 2>&1; then
    note "every_kernel_launched: ok ($(grep -o '[0-9]* kernels exported, [0-9]* launched' "$tmp/coverage.txt"))"
else
    note "every_kernel_launched: FAIL ($(tail -n 1 "$tmp/coverage.txt"))"
    status=1
fi
cat "$tmp/coverage.txt" >>"$out/gpu-tests.txt"

echo "== compute-sanitizer on a subset"
sanitizer=""
for c in "$(command -v compute-sanitizer)" "${CUDA_HOME:-/none}/bin/compute-sanitizer" \
    /usr/local/cuda/bin/compute-sanitizer "$(dirname "$(command -v nvcc || echo /none/nvcc)")/compute-sanitizer"; do
    [[ -n $c && -x $c ]] && { sanitizer=$c; break; }
done
if [[ -z $sanitizer && -f $here/compute-sanitizer.tar.xz ]]; then
    mkdir -p "$tmp/sanitizer"
    tar -C "$tmp/sanitizer" -xJf "$here/compute-sanitizer.tar.xz" &&
        sanitizer="$tmp/sanitizer/bin/compute-sanitizer"
fi
subset=(probe_mma_fragment_layout conv_linear_forward group_norm_2x7x5x64_g32
    attention_hd64_35_tokens bridge_mse optim_adamw_clipped graph_replays_into_the_same_buffers)
: >"$out/sanitizer.txt"
if [[ -z $sanitizer ]]; then
    note "sanitizer: not run (no compute-sanitizer here, none staged)"
else
    note "sanitizer: $sanitizer ($("$sanitizer" --version | grep -o 'Version [^ ]*'))"
    for tool in memcheck racecheck synccheck; do
        echo "-- $tool" >>"$out/sanitizer.txt"
        timeout "$(limit 100)" "$sanitizer" --tool "$tool" --error-exitcode 3 "$tests" "${subset[@]}" \
            >"$tmp/san.txt" 2>&1
        rc=$?
        cat "$tmp/san.txt" >>"$out/sanitizer.txt"
        errors=$(grep -o 'ERROR SUMMARY: [0-9]* error' "$tmp/san.txt" | grep -o '[0-9]*' || echo '?')
        tests_line=$(grep '^gpu tests:' "$tmp/san.txt" || echo "the tests did not finish (exit $rc)")
        if grep -q 'Device not supported' "$tmp/san.txt"; then
            # Seen on some runtimes (the tool, not the build): not a failure.
            note "sanitizer $tool: the tool does not support this device here (exit $rc)"
            continue
        fi
        note "sanitizer $tool: ${errors} errors, exit $rc; $tests_line"
        ((rc == 0)) || status=1
    done
fi

echo "== nadb bench (base, bf16, then f32)"
: >"$out/bench.log"
for precision in bf16 f32; do
    timeout "$(limit 120)" "$here/nadb" bench --device cuda --precision "$precision" --config base \
        --size 256 --nfe 5,10 --batch 16 --train-batch 64 --train-size 64 --iters 10 \
        --force -o "$out/bench-base-$precision.md" >>"$out/bench.log" 2>&1
    rc=$?
    note "bench base $precision: exit $rc"
    ((rc == 0)) || status=1
done
echo "== nadb restore --profile (the shipped sr4-bicubic weights, NFE 10, batch 1)"
repo="$here/.."
example="$repo/examples/sr4-bicubic-input.png"
if [[ -f $example && -f $repo/weights/sr4-bicubic-nadb.safetensors ]]; then
    mkdir -p "$tmp/restored"
    (cd "$repo" && timeout "$(limit 60)" "$here/nadb" restore --device cuda --task sr4-bicubic --nfe 10 \
        --profile --force "$example" -o "$tmp/restored") >"$out/restore-profile.txt" 2>&1
    rc=$?
    note "restore --profile: exit $rc"
    ((rc == 0)) || status=1
else
    note "restore --profile: skipped (no shipped sr4-bicubic weights or example image)"
fi
note "run.sh: $((SECONDS - start)) s, $( ((status == 0)) && echo 'all passed' || echo 'FAILURES above')"
exit $status

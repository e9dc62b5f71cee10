#!/usr/bin/env bash
# Compiles every kernels/*.cu for sm_90 with the pinned nvcc (as build.rs
# does) and prints ptxas's registers, shared memory and spills per kernel.
# Fails on the first kernel file that does not compile.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
nvcc="${NVCC:-$root/.toolchain/cuda/bin/nvcc}"
[[ -x $nvcc ]] || { echo "error: no nvcc at $nvcc (run scripts/install-cuda-toolchain.sh)" >&2; exit 1; }
for src in "$root"/kernels/*.cu; do
    echo "-- $(basename "$src")"
    "$nvcc" -cubin -arch=sm_90 -O3 -std=c++17 -I "$root/kernels" -Xptxas=-v -o /dev/null "$src" 2>&1 |
        sed -n 's/^ptxas info    : //p' |
        awk '/Compiling entry/ { match($0, /\x27[^\x27]+\x27/); name = substr($0, RSTART + 1, RLENGTH - 2); next }
             /Used/ { print "   " name ": " $0 }
             /spill/ && ($5 != 0 || $9 != 0) { print "   " name ": SPILLS: " $0 }'
done

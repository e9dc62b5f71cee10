#!/usr/bin/env bash
# Makes the README's examples with the shipped weights: for each task,
# examples/original/green-meadow.png degraded (examples/TASK-input.png),
# restored at NFE 1 and NFE 10 (seed 0), and the four side by side
# (examples/TASK-side-by-side.png: input, NFE 1, NFE 10, original). Prints
# the PSNR / SSIM of each against the original.
#
#   scripts/make-examples.sh [TASK...]        (default: sr4-bicubic jpeg10)
#
# Environment: NADB (the binary, default target/release/nadb), PYTHON (one
# with Pillow, for scripts/side-by-side.py; default python3).
set -euo pipefail
nadb=${NADB:-target/release/nadb}
python=${PYTHON:-python3}
original=examples/original/green-meadow.png
tasks=("$@")
[[ ${#tasks[@]} -gt 0 ]] || tasks=(sr4-bicubic jpeg10)
"$python" -c 'import PIL' 2>/dev/null || {
    echo "make-examples.sh: $python has no Pillow (set PYTHON to one that has)" >&2
    exit 1
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for task in "${tasks[@]}"; do
    "$nadb" degrade --task "$task" "$original" -o "$work/$task" >/dev/null
    input="$work/$task/green-meadow.png"
    for nfe in 1 10; do
        "$nadb" restore --task "$task" --nfe "$nfe" "$input" -o "$work/$task-nfe$nfe" >/dev/null
    done
    "$python" scripts/side-by-side.py "$work/$task-side-by-side.png" \
        "input ($task)=$input" \
        "NADB, NFE 1=$work/$task-nfe1/green-meadow.png" \
        "NADB, NFE 10=$work/$task-nfe10/green-meadow.png" \
        "original=$original"
    # Replace the examples only once everything above has worked.
    cp "$input" "examples/$task-input.png"
    cp "$work/$task-side-by-side.png" "examples/$task-side-by-side.png"
    "$nadb" eval --data examples/original --task "$task" --methods input,mean,nadb \
        --nfe 1,10 --crop 256 2>/dev/null
done

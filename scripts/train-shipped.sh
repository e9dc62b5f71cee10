#!/usr/bin/env bash
# Trains the networks of one task on the demo photographs with the shipped
# recipe and evaluates them: the mean network, then the bridges (nadb,
# i2sb, nadb-nomean, i2sb-mean) with the same network, data, batch,
# schedule and step budget, then the eval table on the validation
# photographs (256x256 center crops, NFE 1, 2, 5, 10, with the spread
# between two samples).
#
#   scripts/train-shipped.sh TASK WORKDIR        (data from scripts/fetch-demo-photos.sh)
#
# Environment: NADB (the binary, default target/release/nadb), DATA (default
# data/demo), MEAN (an existing mean network to use instead of training
# one, e.g. weights/TASK-mean.safetensors), MEAN_STEPS (800), BRIDGE_STEPS
# (4000), METHODS (the bridges, default "nadb i2sb nadb-nomean i2sb-mean"),
# MINUTES (a time budget per run; a stopped run continues where it stopped
# when the script is run again), CONFIG (small), CROP (32), THREADS (rayon
# threads per run, default 1: two scripts can run side by side on two
# cores).
set -euo pipefail
task=${1:?usage: train-shipped.sh TASK WORKDIR}
work=${2:?usage: train-shipped.sh TASK WORKDIR}
nadb=${NADB:-target/release/nadb}
data=${DATA:-data/demo}
read -r -a methods <<<"${METHODS:-nadb i2sb nadb-nomean i2sb-mean}"
export RAYON_NUM_THREADS=${THREADS:-1}
mkdir -p "$work"
common=(--task "$task" --data "$data/train" --config "${CONFIG:-small}" --crop "${CROP:-32}"
        --batch 8 --lr 1e-3 --warmup 50 --ema 0.999 --save-every 200 --log-every 100 --seed 0)
[[ -n ${MINUTES:-} ]] && common+=(--minutes "$MINUTES")

train() { # NAME COMMAND...: trains (or resumes) $work/NAME.ckpt, logging to NAME.log
    local name=$1; shift
    local out="$work/$name.ckpt" resume=()
    [[ -e $out ]] && resume=(--resume)
    "$nadb" "$@" "${common[@]}" "${resume[@]}" -o "$out" 2>>"$work/$name.log"
}

mean=${MEAN:-$work/mean.ckpt}
[[ -n ${MEAN:-} ]] || train mean train-mean --steps "${MEAN_STEPS:-800}"
checkpoints=()
for method in "${methods[@]}"; do
    uses_mean=()
    [[ $method == nadb || $method == i2sb-mean ]] && uses_mean=(--mean-checkpoint "$mean")
    train "$method" train --method "$method" "${uses_mean[@]}" --steps "${BRIDGE_STEPS:-4000}"
    checkpoints+=(--checkpoint "$method=$work/$method.ckpt")
done

listed=$(IFS=,; echo "${methods[*]}")
"$nadb" eval --data "$data/val" --task "$task" --methods "input,mean,$listed" \
    --nfe 1,2,5,10 --crop 256 --spread --mean-checkpoint "$mean" "${checkpoints[@]}" \
    --force --csv "$work/eval.csv" > "$work/eval.md" 2>>"$work/eval.log"
cat "$work/eval.md"

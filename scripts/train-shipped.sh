#!/usr/bin/env bash
# Trains the shipped networks of one task on the demo photographs and
# evaluates them: the mean network, then the four bridges (nadb, i2sb,
# nadb-nomean, i2sb-mean) with the same network, data and step budget.
#
#   scripts/train-shipped.sh TASK WORKDIR        (data from scripts/fetch-demo-photos.sh)
#
# Environment: NADB (the binary, default target/release/nadb), DATA (default
# data/demo), MEAN_STEPS, BRIDGE_STEPS, CONFIG, CROP, THREADS (rayon threads
# per training, default 1 so two tasks can train side by side on two cores).
set -euo pipefail
task=${1:?usage: train-shipped.sh TASK WORKDIR}
work=${2:?usage: train-shipped.sh TASK WORKDIR}
nadb=${NADB:-target/release/nadb}
data=${DATA:-data/demo}
mean_steps=${MEAN_STEPS:-800}
bridge_steps=${BRIDGE_STEPS:-600}
export RAYON_NUM_THREADS=${THREADS:-1}
mkdir -p "$work"
common=(--task "$task" --data "$data/train" --config "${CONFIG:-small}" --crop "${CROP:-32}"
        --batch 8 --lr 5e-4 --warmup 50 --ema 0.995 --save-every 50 --seed 0)

train() { # NAME COMMAND...: trains (or resumes) $work/NAME.safetensors, logging to NAME.log
    local name=$1; shift
    local out="$work/$name.safetensors" resume=()
    [[ -e $out ]] && resume=(--resume)
    "$nadb" "$@" "${common[@]}" "${resume[@]}" -o "$out" 2>>"$work/$name.log"
}

train mean train-mean --steps "$mean_steps"
for method in nadb i2sb nadb-nomean i2sb-mean; do
    train "$method" train --method "$method" --mean-checkpoint "$work/mean.safetensors" \
        --steps "$bridge_steps"
done

# The comparison table (center 128x128 crops of the validation photographs).
"$nadb" eval --data "$data/val" --task "$task" \
    --methods input,mean,i2sb,i2sb-mean,nadb,nadb-nomean --nfe 1,5,10 \
    --mean-checkpoint "$work/mean.safetensors" \
    --checkpoint "nadb=$work/nadb.safetensors" --checkpoint "i2sb=$work/i2sb.safetensors" \
    --checkpoint "nadb-nomean=$work/nadb-nomean.safetensors" \
    --checkpoint "i2sb-mean=$work/i2sb-mean.safetensors" \
    --force --csv "$work/eval.csv" > "$work/eval.md" 2>>"$work/eval.log"
cat "$work/eval.md"

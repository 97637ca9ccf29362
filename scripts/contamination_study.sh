#!/usr/bin/env bash
# TrustMAE and MemSeg trained on a texture's training folder with a fraction of defective images mixed in, for
# several fractions and seeds; edge-eval each; then the table and plot of benchmarks.contamination (seeds averaged).
#
#   bash scripts/contamination_study.sh                     # brick, 0/10/20/40 %, seed 0, on this machine
#   SEEDS="0 1 2" JOBS=8 DEVICE=cuda bash scripts/contamination_study.sh
# Environment: TEXTURE (brick), SIZE (128), FRACTIONS ("0 0.1 0.2 0.4"), SEEDS ("0"), DEVICE (cpu), JOBS (1,
# trainings at once), TRAIN_S (deadline per training, 1200 s), WORK (/tmp/contamination), OUT (runs/contamination).
# A CPU preset training takes about 4 minutes on 2 cores: 8 per seed.
set -u
TEXTURE=${TEXTURE:-brick} SIZE=${SIZE:-128} FRACTIONS=${FRACTIONS:-0 0.1 0.2 0.4} SEEDS=${SEEDS:-0}
DEVICE=${DEVICE:-cpu} JOBS=${JOBS:-1} TRAIN_S=${TRAIN_S:-1200}
WORK=${WORK:-/tmp/contamination} OUT=${OUT:-runs/contamination}
mkdir -p "$WORK/logs" "$OUT"

for f in $FRACTIONS; do
    [[ -d "$WORK/$TEXTURE-$f/test" ]] || edge-dataset --texture "$TEXTURE" --out "$WORK/$TEXTURE-$f" \
        --image-size "$SIZE" --contamination "$f" >"$WORK/logs/dataset-$f.log" 2>&1 &
done
wait

run() {  # MODEL FRACTION SEED: train (the model's preset) and evaluate; a failure leaves its log and goes on
    local model=$1 f=$2 seed=$3 label="$1-$2-s$3" extra=()
    [[ $model == memseg ]] && extra=(--iterations 300)
    timeout "$TRAIN_S" edge-train --model "$model" --data "$WORK/$TEXTURE-$f" --out "$WORK/$label.pt" \
        --device "$DEVICE" --image-size "$SIZE" --seed "$seed" --no-progress "${extra[@]}" \
        >"$WORK/logs/train-$label.log" 2>&1 &&
        edge-eval --checkpoint "$WORK/$label.pt" --data "$WORK/$TEXTURE-$f" --device "$DEVICE" \
            >"$WORK/$label.json" 2>"$WORK/logs/eval-$label.log"
    echo "$label: exit $?"
}
export -f run
export WORK TEXTURE SIZE DEVICE TRAIN_S
for seed in $SEEDS; do
    for f in $FRACTIONS; do
        echo "trustmae $f $seed"
        echo "memseg $f $seed"
    done
done | xargs -P "$JOBS" -L 1 bash -c 'run "$@"' _

results=()
for json in "$WORK"/trustmae-*.json; do [[ -s $json ]] && results+=("TrustMAE=$json"); done
for json in "$WORK"/memseg-*.json; do [[ -s $json ]] && results+=("MemSeg=$json"); done
python -m benchmarks.contamination "${results[@]}" --out "$OUT/contamination.png"
cp "$WORK"/*.json "$OUT/"

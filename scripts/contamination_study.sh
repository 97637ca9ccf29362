#!/usr/bin/env bash
# TrustMAE and MemSeg trained on a texture's training folder with a fraction of defective images mixed in, for
# several fractions and seeds; edge-eval each; then the table and plot of benchmarks.contamination (seeds averaged).
#
#   bash scripts/contamination_study.sh                     # brick, 0/10/20/40 %, seed 0, on this machine
#   SEEDS="0 1 2" JOBS=8 DEVICE=cuda bash scripts/contamination_study.sh
# Environment: TEXTURE (brick), SIZE (128), FRACTIONS ("0 0.1 0.2 0.4"), SEEDS ("0"), DEVICE (cpu), JOBS (1,
# trainings at once), TRAIN_S (deadline per training, 1200 s), WORK (runs/contamination-work), OUT (runs/contamination).
# A CPU preset training takes about 4 minutes on 2 cores: 8 per seed. Exits 1 if any training or evaluation failed
# (the table is still made from the others).
set -u
TEXTURE=${TEXTURE:-brick} SIZE=${SIZE:-128} FRACTIONS=${FRACTIONS:-0 0.1 0.2 0.4} SEEDS=${SEEDS:-0}
DEVICE=${DEVICE:-cpu} JOBS=${JOBS:-1} TRAIN_S=${TRAIN_S:-1200}
WORK=${WORK:-runs/contamination-work} OUT=${OUT:-runs/contamination}
SET=$TEXTURE-$SIZE  # datasets and results are named by texture and size, so studies can share WORK
mkdir -p "$WORK/logs" "$OUT"

for f in $FRACTIONS; do
    [[ -d "$WORK/$SET-$f/test" ]] || edge-dataset --texture "$TEXTURE" --out "$WORK/$SET-$f" \
        --image-size "$SIZE" --contamination "$f" >"$WORK/logs/dataset-$SET-$f.log" 2>&1 &
done
wait

run() {  # MODEL FRACTION SEED: train (the model's preset) and evaluate; a failure leaves its log and goes on
    local model=$1 f=$2 seed=$3 label="$1-$SET-$2-s$3" extra=()
    [[ $model == memseg ]] && extra=(--iterations 300)
    rm -f "$WORK/$label.json"
    timeout "$TRAIN_S" edge-train --model "$model" --data "$WORK/$SET-$f" --out "$WORK/$label.pt" \
        --device "$DEVICE" --image-size "$SIZE" --seed "$seed" --no-progress "${extra[@]}" \
        >"$WORK/logs/train-$label.log" 2>&1 &&
        edge-eval --checkpoint "$WORK/$label.pt" --data "$WORK/$SET-$f" --device "$DEVICE" \
            >"$WORK/$label.json" 2>"$WORK/logs/eval-$label.log"
    local code=$?
    echo "$label: exit $code"
    return $((code != 0))
}
export -f run
export WORK SET SIZE DEVICE TRAIN_S
failed=0
for seed in $SEEDS; do
    for f in $FRACTIONS; do
        echo "trustmae $f $seed"
        echo "memseg $f $seed"
    done
done | xargs -P "$JOBS" -L 1 bash -c 'run "$@"' _ || failed=1

results=()  # this study's results only
for seed in $SEEDS; do
    for f in $FRACTIONS; do
        for pair in TrustMAE:trustmae MemSeg:memseg; do
            json="$WORK/${pair#*:}-$SET-$f-s$seed.json"
            [[ -s $json ]] && results+=("${pair%%:*}=$json") && cp "$json" "$OUT/"
        done
    done
done
((${#results[@]})) || { echo "contamination_study: no training finished; see $WORK/logs" >&2; exit 1; }
python -m benchmarks.contamination "${results[@]}" --out "$OUT/contamination.png" || exit 1
exit $failed

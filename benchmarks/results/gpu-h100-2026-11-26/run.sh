#!/usr/bin/env bash
# One bounded GPU run (about 8 minutes): 1. latency on a quiet GPU (benchmarks.compare, edge-bench with preloaded
# frames, cuDNN autotuning on and off); 2. seeds 1 and 2 of MemSeg, TrustMAE and RB-AE (--map difference) at their
# 128 px CPU presets on grass and gravel, side by side, each read out by benchmarks.score_pooling (validation sets:
# edge-dataset --seed 1).   R=results-folder bash benchmarks/results/gpu-h100-2026-11-26/run.sh
# As run, MemSeg got edge-train's defaults (--image-size 256, 2,000 iterations, on the 128 px images), not its CPU
# preset (--image-size 128 --iterations 300): pooling-memseg.* measure that setting and are not quoted anywhere;
# the MemSeg seeds of the README were trained on the CPU instead.
set -u
R=${R:-runs/gpu}
W=runs/g
mkdir -p "$R" $W/logs $W/val
export PYTHONUNBUFFERED=1
S=$R/summary.txt
started=$(date +%s)
say() { echo "[$(($(date +%s) - started)) s] $*" | tee -a "$S"; }
say "$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader) torch $(python3 -c 'import torch; print(torch.__version__)' 2>/dev/null)"
timeout 60 edge-dataset --texture brick --out $W/brick256 --image-size 256 >/dev/null 2>&1 &
for t in grass gravel; do
    timeout 60 edge-dataset --texture $t --out $W/$t --image-size 128 >/dev/null 2>&1 &
    timeout 60 edge-dataset --texture $t --out $W/val/$t --image-size 128 --seed 1 >/dev/null 2>&1 &
done
wait
say "datasets made"

# 1. Latency, nothing else running.
timeout 90 edge-train --data $W/brick256 --out $W/timing.pt --device cuda --image-size 256 --iterations 1 \
    --no-progress >$W/logs/timing-train.log 2>&1
timeout 120 edge-export --checkpoint $W/timing.pt --out $W/t16.pt2 --format pt2 --target gpu --precision fp16 \
    --frame-size 1024x1024 --max-batch 16 --force >$W/logs/timing-export.log 2>&1
say "timing model and FP16 .pt2: exit $?"
OMP_NUM_THREADS=16 timeout 150 python3 -m benchmarks.compare --checkpoint $W/timing.pt --frame-size 1024 --frames 50 \
    --batch 16 --rounds 1 --no-pipeline --out $R/compare >$W/logs/compare.log 2>&1
say "compare: exit $?"
timeout 120 edge-bench --engine $W/t16.pt2 --batch 1,16 --frames 200 --out $R/bench >$W/logs/bench.log 2>&1
say "edge-bench: exit $?"
timeout 90 python3 - $W/t16.pt2 >>"$S" 2>$W/logs/cudnn.log <<'PY'
import sys, torch
from edge.bench import bench_engine
from edge.engines import open_engine
for autotune in (False, True, False):
    torch.backends.cudnn.benchmark = autotune
    with open_engine(sys.argv[1]) as engine:
        rows = [bench_engine(engine, batch=b, frames=400) for b in (1, 16)]
    print(f"cudnn.benchmark={autotune}: " + "; ".join(
        f"batch {r['batch']} p50 {r['latency_ms']['p50']:.3f} ms p99 {r['latency_ms']['p99']:.3f} ms "
        f"{r['frames_per_s']:.0f} frames/s" for r in rows), flush=True)
PY
say "cudnn autotuning: exit $?"

# 2. Seeds 1 and 2 of the 128 px CPU presets, side by side.
train() {  # LABEL TEXTURE SEED MODEL OPTIONS...
    local label=$1 t=$2 seed=$3 model=$4
    shift 4
    timeout 240 edge-train --model "$model" --data $W/$t --out $W/$label.pt --device cuda --seed "$seed" \
        --no-progress "$@" >$W/logs/train-$label.log 2>&1
    say "train $label: exit $?"
}
for t in grass gravel; do
    for seed in 1 2; do
        train memseg-$t-s$seed $t $seed memseg &
        train trustmae-$t-s$seed $t $seed trustmae &
        train rbae-$t-s$seed $t $seed rb-ae --map difference &
    done
done
wait
for m in memseg trustmae rbae; do
    args=()
    for t in grass gravel; do
        for seed in 1 2; do
            [[ -f $W/$m-$t-s$seed.pt ]] && args+=(--set $W/$m-$t-s$seed.pt $W/val/$t $W/$t)
        done
    done
    ((${#args[@]})) && (OMP_NUM_THREADS=4 timeout 150 python3 -m benchmarks.score_pooling "${args[@]}" \
        --out $R/pooling-$m.md >$W/logs/pooling-$m.log 2>&1; say "pooling $m: exit $?") &
done
wait
tar -czf $R/logs.tgz -C $W logs
say done

#!/usr/bin/env bash
# edge-bench again after its throughput counts from the first capture (not the engine's start): the 1-iteration
# MemSeg timing model at 256 px, FP16 .pt2 for 1024x1024 frames.   R=folder bash .../bench-again.sh
set -u
R=${R:-runs/gpu}; W=runs/g; mkdir -p "$R" $W
timeout 60 edge-dataset --texture brick --out $W/brick256 --image-size 256 >/dev/null 2>&1
timeout 90 edge-train --data $W/brick256 --out $W/timing.pt --device cuda --image-size 256 --iterations 1 --no-progress >/dev/null 2>&1
timeout 120 edge-export --checkpoint $W/timing.pt --out $W/t16.pt2 --format pt2 --target gpu --precision fp16 \
    --frame-size 1024x1024 --max-batch 16 --force >$R/export.log 2>&1
timeout 150 edge-bench --engine $W/t16.pt2 --batch 1,16 --frames 400 --out $R/bench >$R/bench.log 2>&1
echo "edge-bench: exit $?" >>$R/bench.log

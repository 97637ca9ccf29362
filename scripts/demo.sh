#!/usr/bin/env bash
# The newcomer's first command. With no GPU and no camera it does the whole job:
#   install → texture demo set → train MemSeg on the CPU → evaluate → export ONNX → calibrate →
#   measure the engine's rate → stream the test images through an emulated Basler camera into edge-run
#   (ONNX Runtime) at 70 % of that rate → watch the verdicts arrive in edge-listen → verdict table.
# Exits non-zero when a defective part passed or errors exceed 1 % of the parts (scripts/demo_summary.py says why).
# It installs into whichever python3 comes first on PATH: activate a virtual environment first.
# Everything lands in runs/demo/. Each step is one block below, headed by `step`.
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/demo
rm -rf "$out"
mkdir -p "$out"
started=$(date +%s)
step() { echo; echo "== [$(($(date +%s) - started)) s] $*"; }

step "installing (with the training extras)"
python3 -m pip install --quiet --disable-pip-version-check -e ".[train]"

step "demo data from scikit-image's brick photo: $out/data (train/test) and $out/calibration (held-out good parts)"
edge-dataset --texture brick --out "$out/data" --image-size 128 > /dev/null
edge-dataset --texture brick --out "$out/calibration" --image-size 128 --train 0 --test-good 100 \
  --test-per-defect 0 --seed 1 > /dev/null

step "training MemSeg on the CPU (128 px, 300 iterations; the progress bar shows loss and ETA)"
edge-train --data "$out/data" --out "$out/memseg.pt" --image-size 128 --iterations 300 --device cpu > "$out/train.json"

step "evaluating on the held-out test images → $out/eval.png (every image, its ground truth and anomaly map)"
edge-eval --checkpoint "$out/memseg.pt" --data "$out/data" --device cpu --grid "$out/eval.png" --all > "$out/eval.json"

step "exporting the graph the line runs: Mono8 128x128 frame in, score and anomaly map out"
edge-export --checkpoint "$out/memseg.pt" --out "$out/memseg.onnx" --pixel-format mono8 --precision fp32 \
  --max-batch 4 > /dev/null
edge-verify --engine "$out/memseg.onnx" --reference "$out/memseg.pt" --data "$out/data" --limit 30 > "$out/verify.json"

step "calibrating on 100 held-out good images (target: 1 % false rejects) → $out/memseg.onnx.calibration/"
edge-calibrate --engine "$out/memseg.onnx" --good "$out/calibration/test/good" --target-false-reject 0.01 \
  > "$out/calibration.json"

step "measuring the engine on this machine (edge-bench, 40 frames), to trigger the camera at 70 % of its rate"
edge-bench --engine "$out/memseg.onnx" --batch 1 --frames 40 --no-pipeline --out "$out/bench" > /dev/null
rate=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["engine_only"][0]["frames_per_s"])' \
  "$out/bench/bench.json")
fps=$(python3 -c 'import sys; print(round(0.7 * float(sys.argv[1]), 1))' "$rate")
echo "   the engine alone: $(printf %.1f "$rate") frames/s; the camera will be triggered at $fps parts/s"

step "the line: the test images through an emulated Basler camera (software trigger, $fps/s) into edge-run"
mkdir -p "$out/camera"
i=0
for image in $(cd "$out/data/test" && ls */*.png | sort); do
  cp "$out/data/test/$image" "$out/camera/$(printf %03d $i)_${image%%/*}.png"
  i=$((i + 1))
done
export PYLON_CAMEMU=1
edge-listen tcp://127.0.0.1:5556 --station demo --jsonl "$out/verdicts.jsonl" > "$out/listen.log" &
listener=$!
edge-run --engine "$out/memseg.onnx" --camera basler0 --trigger software --fps "$fps" \
  --emulator-images "$PWD/$out/camera" --max-frames "$i" --station demo --publish tcp://127.0.0.1:5556 \
  --rejects "$out/rejects" --wait-subscribers 1
wait "$listener" || true
head -n 5 "$out/listen.log"
echo "   ... ($(wc -l < "$out/verdicts.jsonl") verdicts in $out/verdicts.jsonl)"

step "judging the run"
python3 scripts/demo_summary.py --out "$out" --fps "$fps" --engine-rate "$rate" --started "$started"

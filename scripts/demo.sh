#!/usr/bin/env bash
# The newcomer's first command. With no GPU and no camera it does the whole job:
#   install → texture demo set → train MemSeg on the CPU → evaluate → export ONNX → calibrate →
#   stream the test images through an emulated Basler camera into edge-run (ONNX Runtime) →
#   watch the verdicts arrive in edge-listen → summary.
# Everything lands in runs/demo/.
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

step "evaluating on the held-out test images → $out/eval.png"
edge-eval --checkpoint "$out/memseg.pt" --data "$out/data" --device cpu --grid "$out/eval.png" > "$out/eval.json"

step "exporting the graph the line runs: Mono8 128x128 frame in, score and anomaly map out"
edge-export --checkpoint "$out/memseg.pt" --out "$out/memseg.onnx" --pixel-format mono8 --precision fp32 \
  --max-batch 4 > /dev/null
edge-verify --engine "$out/memseg.onnx" --reference "$out/memseg.pt" --data "$out/data" --limit 30 > "$out/verify.json"

step "calibrating on 100 held-out good images (target: 1 % false rejects) → $out/memseg.onnx.calibration/"
edge-calibrate --engine "$out/memseg.onnx" --good "$out/calibration/test/good" --target-false-reject 0.01 \
  > "$out/calibration.json"

step "the line: the test images through an emulated Basler camera (software trigger) into edge-run"
mkdir -p "$out/camera"
i=0
for image in $(cd "$out/data/test" && ls */*.png | sort); do
  cp "$out/data/test/$image" "$out/camera/$(printf %03d $i)_${image%%/*}.png"
  i=$((i + 1))
done
export PYLON_CAMEMU=1
edge-listen tcp://127.0.0.1:5556 --station demo --jsonl "$out/verdicts.jsonl" > "$out/listen.log" &
listener=$!
edge-run --engine "$out/memseg.onnx" --camera basler0 --trigger software --fps 20 \
  --emulator-images "$PWD/$out/camera" --max-frames "$i" --station demo --publish tcp://127.0.0.1:5556 \
  --rejects "$out/rejects" --wait-subscribers 1
wait "$listener" || true
head -n 5 "$out/listen.log"
echo "   ... ($(wc -l < "$out/verdicts.jsonl") verdicts in $out/verdicts.jsonl)"

python3 - "$out" "$started" <<'PY'
import json, sys, time
from pathlib import Path

out, started = Path(sys.argv[1]), int(sys.argv[2])
metrics = json.loads((out / "eval.json").read_text())
check = json.loads((out / "verify.json").read_text())
calibration = json.loads((out / "calibration.json").read_text())
names = sorted(p.name for p in (out / "camera").glob("*.png"))
verdicts = [json.loads(line) for line in (out / "verdicts.jsonl").read_text().splitlines()]
good = [v for v in verdicts if "_good" in names[v["frame_id"] % len(names)]]
bad = [v for v in verdicts if "_good" not in names[v["frame_id"] % len(names)]]
latency = sorted(v["latency_ms"]["total"] for v in verdicts if v["latency_ms"]["total"] is not None)
pct = lambda q: latency[min(len(latency) - 1, int(q * len(latency)))]  # noqa: E731
print("\n== summary")
print(f"model:       image AUROC {metrics['image_auroc']:.3f}, pixel AUROC {metrics['pixel_auroc']:.3f}, "
      f"PRO {metrics['pro']:.3f} (edge-eval, {metrics['images']} test images)")
print(f"export:      ONNX Runtime vs checkpoint max |Δscore| {check['max_score_difference']:.1e}, "
      f"verdicts differing {check['verdicts_differing']}")
print(f"calibration: threshold {calibration['threshold']:.4f}, expected false rejects 1 % "
      f"(95 % interval {100 * calibration['false_reject_interval'][0]:.2g}–"
      f"{100 * calibration['false_reject_interval'][1]:.2g} %)")
counts = {k: sum(v["verdict"] == k for v in verdicts) for k in ("pass", "fail", "error")}
print(f"line:        {len(verdicts)} frames → {counts['pass']} pass, {counts['fail']} fail, {counts['error']} error; "
      f"receive→verdict p50 {pct(0.5):.1f} ms, p99 {pct(0.99):.1f} ms (ONNX Runtime, CPU)")
caught = sum(v["verdict"] == "fail" for v in bad) / max(1, len(bad))
passed = sum(v["verdict"] == "pass" for v in good) / max(1, len(good))
print(f"             defective parts failed: {100 * caught:.0f} % of {len(bad)}; "
      f"good parts passed: {100 * passed:.0f} % of {len(good)}")
print(f"look at:     {out}/eval.png, {out}/memseg.onnx.calibration/report.md, {out}/rejects/ (rejected frames)")
print(f"took {time.time() - started:.0f} s")
print("\nnext: train at 256 px on a GPU (edge-train --device cuda), export for your camera (edge-export "
      "--frame-size WxH --pixel-format mono8 --roi x,y,w,h --precision fp16), build on the target (edge-build), "
      "calibrate with pictures from the station, then edge-run --engine memseg.plan --camera basler://SERIAL")
PY

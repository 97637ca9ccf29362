#!/usr/bin/env bash
# The newcomer's first command: install, make the brick texture demo set, train a small MemSeg on the CPU,
# evaluate it, export the FP16 ONNX the line runs, check it against the checkpoint with ONNX Runtime, and build
# it with TensorRT-RTX for an RTX 30xx-class GPU (SM86) to show it builds. Everything lands in runs/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/demo
mkdir -p "$out"
echo "== installing (training extras and TensorRT-RTX's CPU builder)"
python3 -m pip install --quiet --disable-pip-version-check -e ".[train,tensorrt-rtx]"
echo "== demo dataset from scikit-image's brick photo: $out/data"
edge-dataset --texture brick --out "$out/data" --image-size 128 > "$out/dataset.json"
echo "== training MemSeg on the CPU (128 px, 300 iterations: a few minutes on 2 cores)"
edge-train --data "$out/data" --out "$out/memseg.pt" --image-size 128 --iterations 300 --device cpu \
  > "$out/train.json"
echo "== evaluating on the held-out test images"
edge-eval --checkpoint "$out/memseg.pt" --data "$out/data" --device cpu --grid "$out/eval.png" > "$out/eval.json"
echo "== exporting the FP16 ONNX (uint8 frame in; score and anomaly map out)"
edge-export --checkpoint "$out/memseg.pt" --out "$out/memseg.onnx" --precision fp16 --max-batch 4 > /dev/null
echo "== ONNX Runtime (CPU) against the PyTorch checkpoint"
edge-verify --engine "$out/memseg.onnx" --reference "$out/memseg.pt" --data "$out/data" > "$out/verify.json"
echo "== TensorRT-RTX build for SM86 (on the CPU: proves the graph builds; running it needs that GPU)"
edge-build --onnx "$out/memseg.onnx" --out "$out/memseg_sm86.plan" --target-sm 86
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
metrics = json.load(open(f"{out}/eval.json"))
check = json.load(open(f"{out}/verify.json"))
print("\n== summary")
print(f"image AUROC {metrics['image_auroc']:.3f}  pixel AUROC {metrics['pixel_auroc']:.3f}  PRO {metrics['pro']:.3f}")
for defect, m in metrics["per_defect"].items():
    print(f"  {defect:8} image AUROC {m['image_auroc']:.3f}  pixel AUROC {m['pixel_auroc']:.3f}")
print(f"FP16 ONNX vs checkpoint on {check['images']} images: max |Δscore| {check['max_score_difference']:.2e}, "
      f"verdicts differing {check['verdicts_differing']}, {'PASSED' if check['passed'] else 'FAILED'}")
print(f"\nlook at: {out}/eval.png (inputs, ground truth, heatmaps); artefacts: {out}/memseg.onnx(.json), "
      f"{out}/memseg_sm86.plan")
print("next: train at 256 px on a GPU (edge-train --device cuda --iterations 3000), export for your camera "
      "(edge-export --frame-size WxH --pixel-format mono8 --roi x,y,w,h), build on the target (edge-build).")
PY

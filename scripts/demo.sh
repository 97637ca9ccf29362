#!/usr/bin/env bash
# The newcomer's first command. With no GPU and no camera it does the whole job:
#   install → texture demo set → train the default model (PatchCore) on the CPU → evaluate → export ONNX (FP32,
#   and INT8 where the model allows it) → calibrate →
#   choose the fastest CPU path whose verdicts do not move (scripts/demo_path.py) → stream the test images
#   through an emulated Basler camera into edge-run at half that path's rate → watch the verdicts arrive in
#   edge-listen, and in a stand-in PLC through edge-bridge (OPC UA and Modbus TCP), and on the web console
#   (edge-console: its URL is printed) → verdict table.
# Exits non-zero when errors exceed 1 % of the parts or a verdict is missing on the
# line or on a PLC protocol (scripts/demo_summary.py says why).
# It installs into whichever python3 comes first on PATH: activate a virtual environment first.
# Everything lands in runs/demo/. Each step is one block below, headed by `step`.
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/demo
rm -rf "$out"
mkdir -p "$out"
started=$(date +%s)
step() { echo; echo "== [$(($(date +%s) - started)) s] $*"; }

step "installing (with the training, Basler, bridge, console and OpenVINO extras)"
python3 -m pip install --quiet --disable-pip-version-check -e ".[train,basler,bridge,console,openvino]"

step "demo data from scikit-image's brick photo: $out/data (train/test) and $out/calibration (held-out good parts)"
edge-dataset --texture brick --out "$out/data" --image-size 128 > /dev/null
edge-dataset --texture brick --out "$out/calibration" --image-size 128 --train 0 --test-good 100 \
  --test-per-defect 0 --seed 1 > /dev/null

step "training the default model (PatchCore: ImageNet features of the good parts, a memory bank of them) on the CPU"
edge-train --data "$out/data" --out "$out/model.pt" --device cpu > "$out/train.json"

step "evaluating on the held-out test images → $out/eval.png (every image, its ground truth and anomaly map)"
edge-eval --checkpoint "$out/model.pt" --data "$out/data" --device cpu --grid "$out/eval.png" --all > "$out/eval.json"

step "exporting the graph the line runs: Mono8 128x128 frame in, score and anomaly map out"
edge-export --checkpoint "$out/model.pt" --out "$out/model.onnx" --frame-size 128x128 --pixel-format mono8 \
  --precision fp32 --max-batch 4 > /dev/null
edge-verify --engine "$out/model.onnx" --reference "$out/model.pt" --data "$out/data" --limit 30 > "$out/verify.json"

step "calibrating on 100 held-out good images (target: 1 % false rejects) → $out/model.onnx.calibration/"
edge-calibrate --engine "$out/model.onnx" --good "$out/calibration/test/good" --target-false-reject 0.01 \
  > "$out/calibration.json"

step "INT8 export calibrated on the good parts, refused by its fidelity gate if a verdict would move"
if ! edge-export --checkpoint "$out/model.pt" --out "$out/model-int8.onnx" --frame-size 128x128 --pixel-format mono8 \
  --precision int8 --max-batch 4 --calibration-images "$out/calibration/test/good" --verify-data "$out/data" > "$out/int8.log" 2>&1; then
  tail -n 1 "$out/int8.log"
  rm -f "$out/model-int8.onnx"
fi
int8=()
if [ -f "$out/model-int8.onnx" ]; then
  edge-calibrate --engine "$out/model-int8.onnx" --good "$out/calibration/test/good" --target-false-reject 0.01 \
    > /dev/null
  int8=(--int8 "$out/model-int8.onnx")
fi

step "choosing the line's path: every CPU way timed side by side (edge-bench), reduced precision checked on the test set"
read -r backend precision engine rate name < <(python3 scripts/demo_path.py --out "$out" --engine "$out/model.onnx" \
  "${int8[@]}" --reference "$out/model.pt" --data "$out/data")
# Half the engine's own rate: the engine takes both cores while it runs, and the rest of the line (capture,
# publishing, the reject pictures, edge-bridge, the stand-in PLC, edge-listen) needs the same cores between frames.
fps=$(python3 -c 'import sys; print(round(0.5 * float(sys.argv[1]), 1))' "$rate")
run_flags=(--backend "$backend")
if [ "$backend" = openvino ]; then run_flags+=(--inference-precision "$precision"); fi
echo "   the camera will be triggered at $fps parts/s (half of $(printf %.1f "$rate") frames/s)"

step "the line: the test images through an emulated Basler camera (software trigger, $fps/s) into edge-run
   ($name); edge-bridge serves the verdicts on OPC UA and Modbus TCP to a stand-in PLC"
mkdir -p "$out/camera"
i=0
for image in $(cd "$out/data/test" && ls */*.png | sort); do
  cp "$out/data/test/$image" "$out/camera/$(printf %03d $i)_${image%%/*}.png"
  i=$((i + 1))
done
export PYLON_CAMEMU=1
edge-bridge --station demo=tcp://127.0.0.1:5556 --opcua opc.tcp://127.0.0.1:4840/edge/ --modbus 127.0.0.1:5020 \
  --metrics 127.0.0.1:9102 > "$out/bridge.log" 2>&1 &
bridge=$!
edge-console --station demo=tcp://127.0.0.1:5556 --snapshot demo=tcp://127.0.0.1:5557 \
  --control demo=tcp://127.0.0.1:5558 --rejects "demo=$out/rejects" --review "$out/review" \
  --listen 127.0.0.1:8080 > "$out/console.log" 2>&1 &
console=$!
trap 'kill "$bridge" "$console" 2> /dev/null || true' EXIT
echo "   the console: http://127.0.0.1:8080/ (open it while the line runs: live frames, counters, rejects)"
python3 -m edge.bridge.probe --station demo --opcua opc.tcp://127.0.0.1:4840/edge/ --modbus 127.0.0.1:5020 \
  --expect "$i" --timeout 600 --ready "$out/probe.ready" > "$out/probe.json" 2> "$out/probe.log" &
probe=$!
for _ in $(seq 120); do [ -f "$out/probe.ready" ] || ! kill -0 "$probe" 2> /dev/null && break; sleep 0.5; done
edge-listen tcp://127.0.0.1:5556 --station demo --jsonl "$out/verdicts.jsonl" > "$out/listen.log" &
listener=$!
edge-run --engine "$engine" "${run_flags[@]}" --camera basler0 \
  --trigger software --fps "$fps" --emulator-images "$PWD/$out/camera" --max-frames "$i" --station demo \
  --publish tcp://127.0.0.1:5556 --snapshot tcp://127.0.0.1:5557 --control tcp://127.0.0.1:5558 \
  --rejects "$out/rejects" --wait-subscribers 2
wait "$listener" || true
wait "$probe" || true
kill "$bridge" 2> /dev/null || true
head -n 5 "$out/listen.log"
echo "   ... ($(wc -l < "$out/verdicts.jsonl") verdicts in $out/verdicts.jsonl)"

step "judging the run"
judged=0
python3 scripts/demo_summary.py --out "$out" --fps "$fps" --engine-rate "$rate" --started "$started" \
  | tee "$out/summary.txt" || judged=$?
if [ -t 0 ]; then  # in a terminal: the console stays up with the run's counters and rejects until Enter
  read -r -p "the console still shows this run on http://127.0.0.1:8080/ (the rejects, their review): Enter ends it " _
fi
exit "$judged"

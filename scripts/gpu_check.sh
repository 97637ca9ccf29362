#!/usr/bin/env bash
# What only an NVIDIA GPU can show, in one bounded run (about 10 minutes on one H100/H200; the deadlines add up
# to 25 minutes at worst):
#   1. training at full size (256 px): MemSeg 3,000 iterations on brick, grass and gravel, PatchCore on the three,
#      TrustMAE's GPU preset on brick (GPU_CHECK_PRESETS=1 adds RB-AE's and CMA-AE's), side by side, then edge-eval;
#   2. FP16 on the GPU: the CUDA-graph tests, then each MemSeg checkpoint exported as an FP16 .pt2 through the
#      fidelity gate (verdicts, scores and AUROC against its FP32 checkpoint);
#   3. latency: benchmarks.compare (the authors' way against the folded graph, FP32/FP16 with CUDA graphs) and
#      edge-bench on the FP16 .pt2 at batch 1 and 16, engine and frame received -> verdict sent;
#   4. four emulated cameras on that .pt2 in one process (batches across cameras) against one process each.
# Every step has a deadline and goes on after a failure; results land in $RESULTS (default runs/gpu-check).
#
#   bash scripts/gpu_check.sh                     # on the GPU machine, from the repository root
#   GPU_CHECK_QUICK=1 bash scripts/gpu_check.sh   # the same steps in seconds, on any machine (a dry run)
set -u
RESULTS=${RESULTS:-runs/gpu-check}
WORK=${WORK:-runs/gpu-check}
if [[ -n "${GPU_CHECK_QUICK:-}" ]]; then
    SIZE=64 FRAME=128 MEMSEG="--iterations 4" TRAIN_S=${TRAIN_S:-240} FRAMES=16 BATCH=4
    RBAE="--phase1-iterations 2 --phase2-iterations 2" CMAAE="--stage1-iterations 2 --stage2-iterations 2"
    TRUSTMAE="--iterations 2"
else
    SIZE=256 FRAME=1024 MEMSEG="--iterations 3000" TRAIN_S=${TRAIN_S:-280} FRAMES=200 BATCH=16
    RBAE="--width 32 --phase1-iterations 3000 --phase2-iterations 3000 --batch-size 8"
    CMAAE="--stage1-iterations 5000 --stage2-iterations 5000 --batch-size 64"
    TRUSTMAE="--width 32 --iterations 2000"
fi
DEVICE=$(python3 -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
shopt -s nullglob
mkdir -p "$RESULTS"
rm -rf "${WORK:?}"/{brick,grass,gravel,models,logs,compare,bench,camera,cameras} "$RESULTS/summary.txt"
mkdir -p "$WORK/logs"
started=$(date +%s)
say() { echo "[$(($(date +%s) - started)) s] $*" | tee -a "$RESULTS/summary.txt"; }
export OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1

say "machine: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo no GPU); device $DEVICE"
python3 -c "import torch, onnxruntime; print('torch', torch.__version__, 'onnxruntime', onnxruntime.__version__)" \
    | tee -a "$RESULTS/summary.txt"

for t in brick grass gravel; do
    timeout 60 edge-dataset --texture $t --out "$WORK/$t" --image-size $SIZE >"$WORK/logs/dataset-$t.log" 2>&1 &
done
wait
say "datasets at $SIZE px made"

# 2a. The CUDA-graph tests first, alone (beside the trainings they ran past two minutes).
timeout 180 python3 -m pytest -q -p no:cacheprovider tests/test_export.py -k gpu >"$WORK/logs/pytest-gpu.log" 2>&1
say "pytest -k gpu: exit $? ($(tail -1 "$WORK/logs/pytest-gpu.log"))"

# 1. Every training side by side on the one GPU, each bounded by TRAIN_S seconds.
mkdir -p "$WORK/models"
train() {  # LABEL DATA MODEL OPTIONS...
    local label=$1 data=$2 model=$3
    shift 3
    timeout "$TRAIN_S" edge-train --model "$model" --data "$WORK/$data" --out "$WORK/models/$label.pt" \
        --device "$DEVICE" --image-size $SIZE "$@" >"$WORK/logs/train-$label.log" 2>&1
    echo "train $label: exit $?" >>"$WORK/logs/exits.txt"
}
for t in brick grass gravel; do
    # shellcheck disable=SC2086
    train memseg-$t $t memseg $MEMSEG &
    # shellcheck disable=SC2086
    train patchcore-$t $t patchcore &
done
# shellcheck disable=SC2086
train trustmae-brick brick trustmae $TRUSTMAE &
if [[ -n "${GPU_CHECK_PRESETS:-}" ]]; then  # about 10 minutes each beside the other trainings: give TRAIN_S=660
    # shellcheck disable=SC2086
    train rb-ae-brick brick rb-ae $RBAE &
    # shellcheck disable=SC2086
    train cma-ae-brick brick cma-ae $CMAAE &
fi
wait
say "training done: $(tr '\n' ';' <"$WORK/logs/exits.txt")"

for checkpoint in "$WORK"/models/*.pt; do
    label=$(basename "$checkpoint" .pt)
    (timeout 120 edge-eval --checkpoint "$checkpoint" --data "$WORK/${label##*-}" --device "$DEVICE" \
        >"$WORK/logs/eval-$label.json" 2>"$WORK/logs/eval-$label.log"
    python3 - "$label" "$WORK/logs/eval-$label.json" >>"$RESULTS/summary.txt" <<'EOF'
import json, sys
try:
    r = json.load(open(sys.argv[2]))
except Exception as exc:
    print(f"eval {sys.argv[1]}: failed ({exc})")
else:
    keys = ("image_auroc", "pixel_auroc", "pro", "pixel_f1_max")
    print(f"eval {sys.argv[1]}: " + " / ".join(f"{k} {r[k]:.3f}" for k in keys if k in r))
EOF
    ) &
done
wait
say "evaluations done"

# 2b. FP16 .pt2 through the fidelity gate, against its FP32 checkpoint (run on the CPU), per texture: the sidecar
#     records verdicts differing, max |Δscore| and the AUROC change (--force: written either way, so it is seen).
for t in brick grass gravel; do
    checkpoint="$WORK/models/memseg-$t.pt"
    [[ -f $checkpoint ]] || continue
    (OMP_NUM_THREADS=5 timeout 300 edge-export --checkpoint "$checkpoint" --out "$WORK/models/memseg-$t-fp16.pt2" \
        --format pt2 --target gpu --precision fp16 --verify-data "$WORK/$t" --calibration-images "$WORK/$t/train/good" \
        --force >"$WORK/logs/export-fp16-$t.log" 2>&1
    code=$?
    echo "fp16 $t: exit $code" >>"$RESULTS/summary.txt"
    ((code == 0)) || grep -v Warning "$WORK/logs/export-fp16-$t.log" | tail -2 >>"$RESULTS/summary.txt"
    [[ -f "$WORK/models/memseg-$t-fp16.pt2" ]] && python3 -c "import sys; from edge.sidecar import read_sidecar; from export.verify import Comparison
for r in read_sidecar(sys.argv[1]).build['fidelity']:
    print('fp16 $t:', Comparison(**{k: v for k, v in r.items() if k != 'passed'}).summary())" \
        "$WORK/models/memseg-$t-fp16.pt2" >>"$RESULTS/summary.txt" 2>&1) &
done
wait
say "FP16 checks done"

# 3. Latency on a quiet GPU: the trained brick model, or a 1-iteration one (timing does not depend on weights).
checkpoint="$WORK/models/memseg-brick.pt"
if [[ ! -f $checkpoint ]]; then
    checkpoint="$WORK/models/memseg-timing.pt"
    timeout 120 edge-train --model memseg --data "$WORK/brick" --out "$checkpoint" --device "$DEVICE" --image-size $SIZE --iterations 1 \
        --no-progress >"$WORK/logs/train-timing.log" 2>&1
fi
OMP_NUM_THREADS=16 timeout 150 python3 -m benchmarks.compare --checkpoint "$checkpoint" --frame-size $FRAME \
    --frames $((FRAMES / 4)) --batch $BATCH --rounds 2 --no-pipeline --out "$WORK/compare" \
    >"$WORK/logs/compare.log" 2>&1
say "compare: exit $?"
cat "$WORK/compare/compare.md" >>"$RESULTS/summary.txt" 2>/dev/null
timeout 90 edge-export --checkpoint "$checkpoint" --out "$WORK/models/timing-fp16.pt2" --format pt2 --target gpu \
    --precision fp16 --frame-size ${FRAME}x$FRAME --max-batch $BATCH --force >"$WORK/logs/export-timing.log" 2>&1
say "edge-export (timing .pt2): exit $?"
if [[ -f "$WORK/models/timing-fp16.pt2" ]]; then
    timeout 120 edge-bench --engine "$WORK/models/timing-fp16.pt2" --batch 1,$BATCH --frames $FRAMES \
        --out "$WORK/bench" >"$WORK/logs/bench.log" 2>&1
    say "edge-bench: exit $?"
fi
cat "$WORK/bench/bench.md" >>"$RESULTS/summary.txt" 2>/dev/null

# 4. several cameras (pylon's emulator) on the timing .pt2: one process batching across cameras against one each
if [[ -f "$WORK/models/timing-fp16.pt2" ]] && python3 -c "import pypylon" 2>/dev/null; then
    mkdir -p "$WORK/camera"
    python3 -c "import cv2, glob, sys; [cv2.imwrite(f'{sys.argv[2]}/{i:03d}.png', cv2.resize(cv2.imread(p), (int(sys.argv[1]),) * 2)) for i, p in enumerate(sorted(glob.glob(sys.argv[3] + '/test/*/*.png'))[:8])]" \
        $FRAME "$WORK/camera" "$WORK/brick"
    timeout 150 python3 -m benchmarks.cameras --engine "$WORK/models/timing-fp16.pt2" --images "$WORK/camera" \
        --threshold 0.5 --cameras 1,2,4 --fps 60 --frames 300 --out "$WORK/cameras" >"$WORK/logs/cameras.log" 2>&1
    say "cameras: exit $?"
    cat "$WORK/cameras/cameras.md" >>"$RESULTS/summary.txt" 2>/dev/null
fi

# shellcheck disable=SC2046
tar -czf "$RESULTS/logs.tgz" -C "$WORK" $(cd "$WORK" && ls -d logs compare bench cameras 2>/dev/null) \
    $(cd "$WORK" && find models -name "*.png" -o -name "*.json")
say "done"

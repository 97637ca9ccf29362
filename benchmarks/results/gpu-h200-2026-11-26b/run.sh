#!/usr/bin/env bash
set -u
OUT=${OUT:-runs/gpu-h200}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
S=$OUT/summary.txt; started=$(date +%s)
say() { echo "[$(($(date +%s) - started)) s] $*" | tee -a "$S"; }
say "$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader) $(python3 -c 'import torch; print(torch.__version__)')"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_export.py -k gpu >"$OUT/pytest-gpu.log" 2>&1
say "pytest -k gpu: exit $? $(grep -E 'passed|failed' "$OUT/pytest-gpu.log" | tail -1)"
W=runs/g; mkdir -p $W/logs
(SEEDS="0 1 2" JOBS=6 DEVICE=cuda TRAIN_S=240 WORK=$W/ct OUT=$OUT/contamination bash scripts/contamination_study.sh >"$OUT/contamination.log" 2>&1; say "contamination done") &
for t in grass gravel; do
  (timeout 60 edge-dataset --texture $t --out $W/$t --image-size 128 >/dev/null 2>&1
   for w in 16 32; do
     (timeout 330 edge-train --model rb-ae --data $W/$t --out $W/rbae-w$w-$t.pt --device cuda --image-size 128 --width $w \
        --phase1-iterations 2000 --phase2-iterations 2000 --no-progress >$W/logs/rbae-w$w-$t.log 2>&1 &&
      edge-eval --checkpoint $W/rbae-w$w-$t.pt --data $W/$t --device cuda >$OUT/rbae-w$w-$t.json 2>>$W/logs/rbae-w$w-$t.log
      say "rb-ae w$w $t: exit $? $(tail -c 300 $W/logs/rbae-w$w-$t.log | tr '\n' ' ')") &
   done; wait) &
done
(timeout 60 edge-dataset --texture brick --out $W/brick256 --image-size 256 >/dev/null 2>&1
 (timeout 300 edge-train --model trustmae --data $W/brick256 --out $W/tm256.pt --device cuda --image-size 256 --width 32 --iterations 2000 \
    --no-progress >$W/logs/tm256.log 2>&1 && edge-eval --checkpoint $W/tm256.pt --data $W/brick256 --device cuda >$OUT/tm256-brick.json 2>>$W/logs/tm256.log
  say "trustmae 256 brick: exit $? $(tail -c 300 $W/logs/tm256.log | tr '\n' ' ')") &
 timeout 150 edge-train --data $W/brick256 --out $W/ms256.pt --device cuda --image-size 256 --iterations 1000 --no-progress >$W/logs/ms256.log 2>&1
 say "memseg 256 brick: exit $?"
 OMP_NUM_THREADS=4 timeout 200 edge-export --checkpoint $W/ms256.pt --out $W/ms256-fp16.pt2 --format pt2 --target gpu --precision fp16 \
   --verify-data $W/brick256 --calibration-images $W/brick256/train/good --force >$OUT/export-fp16.log 2>&1
 say "fp16 export: exit $? $(tail -c 600 $OUT/export-fp16.log | tr '\n' ' ')"
 wait) &
wait
cp $W/logs/*.log "$OUT/" 2>/dev/null
say done

# Further runs on the same GPU host (each a command line of its own):
#   contamination on grass and gravel (scripts/contamination_study.sh as of commit 9d817f0):
#     SEEDS="0 1 2" FRACTIONS="0 0.2" TEXTURE=grass JOBS=8 DEVICE=cuda TRAIN_S=200 WORK=runs/cg \
#       bash scripts/contamination_study.sh   (gravel: TEXTURE=gravel WORK=runs/cv)
#   TrustMAE on gravel with --width 32 / --iterations 600 / both, then five more settings (tm-gravel-variants.txt):
#     edge-train --model trustmae --data gravel --out M.pt --device cuda OPTIONS; edge-eval --checkpoint M.pt --data gravel

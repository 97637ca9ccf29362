#!/usr/bin/env bash
# Seeds 1 and 2 of the CPU presets on grass and gravel (seed 0 is the README's model table), one at a time on
# the 2-core CPU; datasets from edge-dataset --texture T --out runs/ct/T --image-size 128 (seed 0).
set -u
W=runs/seeds
for seed in 1 2; do
  for t in grass gravel; do
    for m in rbae memseg; do
      label=$m-$t-s$seed
      [[ -f $W/$label.json ]] && continue
      if [[ $m == rbae ]]; then opts=(--model rb-ae --map difference); else opts=(--model memseg --image-size 128 --iterations 300); fi
      start=$(date +%s)
      edge-train "${opts[@]}" --data runs/ct/$t --out $W/$label.pt --seed $seed --no-progress >$W/logs/train-$label.log 2>&1 &&
      edge-eval --checkpoint $W/$label.pt --data runs/ct/$t >$W/$label.json 2>$W/logs/eval-$label.log
      echo "$label exit $? $(( $(date +%s) - start )) s" >> $W/done.txt
    done
  done
done
for seed in 1 2; do for t in grass gravel; do
  label=trustmae-$t-s$seed; [[ -f $W/$label.json ]] && continue
  start=$(date +%s)
  edge-train --model trustmae --data runs/ct/$t --out $W/$label.pt --seed $seed --no-progress >$W/logs/train-$label.log 2>&1 &&
  edge-eval --checkpoint $W/$label.pt --data runs/ct/$t >$W/$label.json 2>$W/logs/eval-$label.log
  echo "$label exit $? $(( $(date +%s) - start )) s" >> $W/done.txt
done; done
echo all done >> $W/done.txt

cd /work/main
for job in grass:0 gravel:0 brick:0 grass:1 gravel:1 grass:2 gravel:2; do
  t=${job%:*}; s=${job#*:}; n=ensemble-$t-s$s
  /usr/bin/time -f "%e s" -o runs/ens/$n.time edge-train --model ensemble --data runs/ct/$t --out runs/ens/$n.pt --seed $s --no-progress > runs/ens/$n.train.json 2> runs/ens/$n.train.log
  edge-eval --checkpoint runs/ens/$n.pt --data runs/ct/$t > runs/ens/$n.eval.json 2> runs/ens/$n.eval.log
  echo "$n done $(date +%T)" >> runs/ens/done.txt
done

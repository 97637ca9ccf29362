cd /work/main
for job in grass:0 gravel:0 brick:0 grass:1 gravel:1 grass:2 gravel:2; do
  t=${job%:*}; s=${job#*:}; n=ensemble-$t-s$s
  /usr/bin/time -f "%e s" -o /tmp/ens/$n.time edge-train --model ensemble --data /tmp/ct/$t --out /tmp/ens/$n.pt --seed $s --no-progress > /tmp/ens/$n.train.json 2> /tmp/ens/$n.train.log
  edge-eval --checkpoint /tmp/ens/$n.pt --data /tmp/ct/$t > /tmp/ens/$n.eval.json 2> /tmp/ens/$n.eval.log
  echo "$n done $(date +%T)" >> /tmp/ens/done.txt
done

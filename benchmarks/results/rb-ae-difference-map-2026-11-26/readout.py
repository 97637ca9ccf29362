"""Write a copy of an RB-AE checkpoint whose config reads the map as feature differences (training unchanged).

python benchmarks/results/rb-ae-difference-map-2026-11-26/readout.py rb-ae.pt rb-ae-difference.pt
"""

import sys

import torch

from export.checkpoint import read_checkpoint

source, target = sys.argv[1:3]
payload = read_checkpoint(source)
payload["config"] = {**payload["config"], "map": "difference"}
torch.save(payload, target)

"""Write a copy of a checkpoint whose image score is the mean of its k highest pixels (the training is unchanged):
python rescore.py IN.pt OUT.pt K"""

import sys

import torch

from export.checkpoint import read_checkpoint

src, dst, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
payload = read_checkpoint(src)
payload["config"] = {**payload["config"], "score": "top_k_mean", "top_k": k}
torch.save(payload, dst)

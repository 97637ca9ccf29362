"""Dump TrustMAE's raw components (squared error, perceptual distance) per image for val and test sets."""

import sys
from pathlib import Path

import numpy as np
import torch

from export.checkpoint import load_model
from export.data.batches import to_batch
from export.data.images import load_test_set

ckpt, data, out = sys.argv[1], sys.argv[2], sys.argv[3]
model, _ = load_model(Path(ckpt))
model.eval()
samples = load_test_set(Path(data), model.config.image_size)
sq, pe = [], []
with torch.no_grad():
    for s in range(0, len(samples), 16):
        x = to_batch([t.image for t in samples[s : s + 16]], torch.device("cpu"), model.normalisation)
        r = model(x)[0]
        sq.append((x.float() - r.float()).pow(2).mean(dim=1)[:, None].numpy()[:, 0])
        pe.append(model.perceptual(x, r).float().numpy()[:, 0])
np.savez_compressed(
    out,
    sq=np.concatenate(sq),
    pe=np.concatenate(pe),
    labels=np.array([t.is_defective for t in samples]),
    defects=np.array([t.defect for t in samples]),
    masks=np.stack([t.mask for t in samples]),
)
print(out, len(samples))

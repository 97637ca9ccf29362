import sys

import numpy as np

sys.path.insert(0, "runs/probe")
from an import D, blur, topk

from export.metrics import auroc

print("a sig k  meanV meanT | grass-test s0..2 gravel-test s0..2")
for a in (0.25, 0.5, 1.0, 1.5):
    for sg in (3, 4, 6):
        for k in (200, 600, 1000):
            r = {key: auroc(d["labels"], topk(blur(d["sq"] * d["pe"] ** a, sg), k)) for key, d in D.items()}
            v = np.mean([r[x] for x in r if x[2] == "val"])
            t = np.mean([r[x] for x in r if x[2] == "test"])
            print(
                a,
                sg,
                k,
                f"{v:.3f} {t:.3f} |",
                " ".join(f"{r[(tx, s, 'test')]:.3f}" for tx in ("grass", "gravel") for s in (0, 1, 2)),
            )

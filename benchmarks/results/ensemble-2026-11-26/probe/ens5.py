import sys

import numpy as np

sys.path.insert(0, "runs/probe")
from an import D, blur, topk

from export.metrics import auroc


def tm(d):
    return blur(d["sq"] * d["pe"], 4)


names = sys.argv[1].split(",")
for t in ("grass", "gravel"):
    for sp in ("val", "test"):
        key = (t, 0, sp)
        total = 0
        for n in names:
            if n == "tm":
                total = total + tm(D[key]) / np.load(f"runs/probe/tmtrain-{t}-s0.npy").std()
            else:
                total = (
                    total
                    + dict(np.load(f"runs/probe/{n}-{t}-s0-{sp}.npz"))["maps"]
                    / np.load(f"runs/probe/{n}train-{t}-s0.npy").std()
                )
        print(
            names,
            t,
            sp,
            " ".join(f"k{k} {auroc(D[key]['labels'], topk(total, k)):.3f}" for k in (100, 300, 600, 1000)),
        )

import sys

import numpy as np

sys.path.insert(0, "runs/probe")
from an import D, blur, topk

from export.metrics import auroc

other = sys.argv[1]


def tm(d):
    return blur(d["sq"] * d["pe"], 4)


for t in ("grass", "gravel"):
    for sp in ("val", "test"):
        key = (t, 0, sp)
        other_maps = dict(np.load(f"runs/probe/{other}-{t}-s0-{sp}.npz"))
        a = np.load(f"runs/probe/tmtrain-{t}-s0.npy")
        b = np.load(f"runs/probe/{other}train-{t}-s0.npy")
        row = [auroc(other_maps["labels"], other_maps["scores"])]
        for w in (0.5, 0.67):
            for k in (300, 600):
                row.append(
                    auroc(D[key]["labels"], topk(w * tm(D[key]) / a.std() + (1 - w) * other_maps["maps"] / b.std(), k))
                )
        print(other, t, sp, "own {:.3f} | w.5 k300 {:.3f} k600 {:.3f} | w.67 k300 {:.3f} k600 {:.3f}".format(*row))

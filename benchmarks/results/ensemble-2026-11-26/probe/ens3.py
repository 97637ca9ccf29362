import sys

import numpy as np

sys.path.insert(0, "runs/probe")
from an import D, blur, topk

from export.metrics import auroc

R = {k: dict(np.load(f"runs/probe/rb-{k[0]}-s{k[1]}-{k[2]}.npz")) for k in D}


def tm(d):
    return blur(d["sq"] * d["pe"], 4)


for w in (0.5,):
    for k in (100, 300, 600, 1000):
        row = []
        for key in D:
            t, s, sp = key
            a = np.load(f"runs/probe/tmtrain-{t}-s{s}.npy")
            b = np.load(f"runs/probe/rbtrain-{t}-s{s}.npy")
            A = (tm(D[key]) - a.mean()) / a.std()
            B = (R[key]["maps"] - b.mean()) / b.std()
            row.append(auroc(D[key]["labels"], topk(w * A + (1 - w) * B, k)))
        print(
            "train-z",
            w,
            k,
            " ".join(f"{r:.3f}" for r in row),
            f"meanV {np.mean(row[0::2]):.3f} meanT {np.mean(row[1::2]):.3f}",
        )

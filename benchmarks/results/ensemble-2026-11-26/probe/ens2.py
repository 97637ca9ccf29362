import sys

import numpy as np

sys.path.insert(0, "runs/probe")
from an import D, blur, topk

from export.metrics import auroc

R = {k: dict(np.load(f"runs/probe/rb-{k[0]}-s{k[1]}-{k[2]}.npz")) for k in D}


def tm(d):
    return blur(d["sq"] * d["pe"], 4)


def z(maps, vmaps, labels):
    g = vmaps[~labels]
    return (maps - g.mean()) / g.std()


for t in ("grass", "gravel"):
    for sp in ("val", "test"):
        res = []
        for a, b in ((0, 1), (1, 2), (0, 2)):
            Za = z(tm(D[t, a, sp]), tm(D[t, a, "val"]), D[t, a, "val"]["labels"])
            Zb = z(tm(D[t, b, sp]), tm(D[t, b, "val"]), D[t, b, "val"]["labels"])
            res.append(auroc(D[t, a, sp]["labels"], topk(Za + Zb, 300)))
        print(t, sp, "TM seed pairs", " ".join(f"{r:.3f}" for r in res))
        for k in (100, 300, 600, 1000):
            res = []
            for s in (0, 1, 2):
                A = z(tm(D[t, s, sp]), tm(D[t, s, "val"]), D[t, s, "val"]["labels"])
                B = z(R[t, s, sp]["maps"], R[t, s, "val"]["maps"], R[t, s, "val"]["labels"])
                res.append(auroc(D[t, s, sp]["labels"], topk(A + B, k)))
            print(t, sp, "TM+RB k", k, " ".join(f"{r:.3f}" for r in res))

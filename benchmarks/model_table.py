"""Compare trained models on the generated sets: image AUROC, pixel AUROC, PRO, training time and CPU latency per
frame (the FP32 ONNX export in ONNX Runtime, batch 1), as a Markdown table and a PNG plot.

Checkpoints are laid out ``MODELS/<label>/<set>.pt`` (the label names the model and its variant, e.g.
``memseg-efficientnet_lite0-imagenet``), sets ``DATA/<set>/`` as ``edge-dataset`` writes them:

    python -m benchmarks.model_table --models /tmp/ckpt --data /tmp/sets --out benchmarks/results/models
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np

from edge.bench import bench_engine, machine
from edge.engines import open_engine
from edge.sidecar import FrameSpec
from export.checkpoint import read_checkpoint
from export.evaluate import evaluate
from export.exporter import export_artefact

TARGET = 0.95  # image and pixel AUROC the best model should reach on every set


def cpu_latency_ms(checkpoint: Path, size: int, frames: int) -> float:
    """Median latency of the FP32 ONNX export in ONNX Runtime on the CPU, one frame of model size at a time."""
    with tempfile.TemporaryDirectory() as folder:
        onnx_path = Path(folder) / "model.onnx"
        export_artefact(checkpoint, onnx_path, FrameSpec(size, size, "rgb8", max_batch=1), "fp32")
        with open_engine(onnx_path, backend="onnxruntime") as engine:
            return bench_engine(engine, batch=1, frames=frames)["latency_ms"]["p50"]


def measure(checkpoint: Path, data: Path, frames: int) -> dict:
    """One row: the checkpoint's metrics on ``data``, its training time and its CPU latency."""
    payload = read_checkpoint(checkpoint)
    metrics = evaluate(checkpoint, data, device="cpu")
    return {
        "model": checkpoint.parent.name,
        "set": checkpoint.stem,
        "image_auroc": metrics["image_auroc"],
        "pixel_auroc": metrics["pixel_auroc"],
        "pro": metrics["pro"],
        "train_seconds": payload["training"].get("seconds"),
        "train_device": payload["training"].get("device"),
        "latency_ms": cpu_latency_ms(checkpoint, payload["config"]["image_size"], frames),
    }


def markdown(rows: list[dict]) -> str:
    """The table, one line per model and set, and a last line per model: does it reach the target everywhere?"""
    lines = [
        "| model | set | image AUROC | pixel AUROC | PRO | training (s) | CPU latency per frame (ms) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['set']} | {r['image_auroc']:.3f} | {r['pixel_auroc']:.3f} | {r['pro']:.3f} | "
            f"{r['train_seconds']:.0f} ({r['train_device']}) | {r['latency_ms']:.1f} |"
        )
    lines.append("")
    for model in sorted({r["model"] for r in rows}):
        own = [r for r in rows if r["model"] == model]
        short = [
            f"{r['set']} ({' and '.join(k for k in ('image', 'pixel') if r[f'{k}_auroc'] < TARGET)})"
            for r in own
            if min(r["image_auroc"], r["pixel_auroc"]) < TARGET
        ]
        verdict = "reaches" if not short else "misses on " + ", ".join(short)
        lines.append(f"- {model}: {verdict} image and pixel AUROC ≥ {TARGET} ({len(own)} sets measured)")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """Grouped bars per set: image AUROC, pixel AUROC and PRO of each model, the target as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in rows})
    sets = sorted({r["set"] for r in rows})
    metrics = [("image_auroc", "image AUROC"), ("pixel_auroc", "pixel AUROC"), ("pro", "PRO")]
    figure, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), sharey=True)
    width = 0.8 / max(1, len(models))
    for axis, (key, title) in zip(axes, metrics, strict=True):
        for i, model in enumerate(models):
            values = [next((r[key] for r in rows if r["model"] == model and r["set"] == s), np.nan) for s in sets]
            axis.bar(np.arange(len(sets)) + i * width, values, width, label=model)
        axis.axhline(TARGET, color="black", linestyle="--", linewidth=1)
        axis.set_xticks(np.arange(len(sets)) + width * (len(models) - 1) / 2, sets)
        axis.set_ylim(0.4, 1.0)
        axis.set_title(title)
    axes[0].legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="model_table", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", required=True, type=Path, help="folder of <label>/<set>.pt checkpoints")
    parser.add_argument("--data", required=True, type=Path, help="folder of <set>/ datasets")
    parser.add_argument("--out", type=Path, help="folder for table.md, rows.json and models.png (default: --models)")
    parser.add_argument("--frames", type=int, default=50, help="frames timed per model for the latency")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="no --backbone-weights")
    checkpoints = sorted(p for p in args.models.glob("*/*.pt") if (args.data / p.stem / "test").is_dir())
    if not checkpoints:
        parser.error(f"no <label>/<set>.pt under {args.models} with a matching {args.data}/<set>/test")
    rows = [measure(path, args.data / path.stem, args.frames) for path in checkpoints]
    out = args.out or args.models
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(rows)
    (out / "table.md").write_text(table + "\n")
    (out / "rows.json").write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
    plot(rows, out / "models.png")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

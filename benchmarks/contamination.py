"""Image AUROC against the fraction of defective images in the training folder, one line per model: the table
(Markdown) and a plot (PNG). Each argument is ``MODEL=EVAL.json``, an ``edge-eval`` result; the fraction is read
from the dataset it names (``train_contamination/*/*_mask.png`` against ``train/good``, as ``edge-dataset
--contamination`` writes them; a relative dataset path counts from here, else from the JSON's folder). Several
results of one model at one fraction (trainings with other seeds) are averaged; the table gives their number and
the image AUROC's range, the plot the range as an error bar.

    python -m benchmarks.contamination TrustMAE=tm-0.json TrustMAE=tm-20.json MemSeg=ms-0.json ... --out plot.png
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from statistics import mean

from benchmarks.provenance import provenance
from edge.sources import IMAGE_SUFFIXES
from edge.tool import ToolError, run_tool


def contamination(data: Path) -> float:
    """The fraction of ``data/train/good`` that carries a defect."""
    good = data / "train" / "good"
    train = [p for p in good.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES] if good.is_dir() else []
    if not train:
        raise ToolError(f"{data}: no training images in train/good (give the dataset edge-eval was run on)")
    return len(list(data.glob("train_contamination/*/*_mask.png"))) / len(train)


def dataset_of(result: dict, path: Path) -> Path:
    """The dataset an ``edge-eval`` result names: as written (from where ``edge-eval`` ran, here), else from the
    JSON's own folder."""
    for data in (Path(result["data"]), path.parent / result["data"]):
        if data.is_dir():
            return data
    raise ToolError(
        f"{path}: its dataset {result['data']} is not found here or next to it; run from where edge-eval ran"
    )


METRICS = ("image_auroc", "pixel_auroc", "pro")


def read_points(arguments: list[str]) -> dict[str, list[tuple[float, list[dict]]]]:
    """Per model, ``(fraction, its edge-eval results)`` sorted by fraction."""
    points: dict[str, dict[float, list[dict]]] = defaultdict(lambda: defaultdict(list))
    datasets: dict[tuple[str, float], Path] = {}
    for argument in arguments:
        model, sep, name = argument.partition("=")
        if not sep or not model:
            raise ToolError(f"{argument!r}: write MODEL=EVAL.json")
        path = Path(name)
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ToolError(f"{path}: not an edge-eval result ({exc})") from exc
        missing = {"data", *METRICS} - set(result)
        if missing:
            raise ToolError(f"{path}: not an edge-eval result (no {', '.join(sorted(missing))})")
        data = dataset_of(result, path).resolve()
        fraction = round(contamination(data), 4)
        known = datasets.setdefault((model, fraction), data)
        if known != data:
            raise ToolError(
                f"{path}: {model} at {fraction:.0%} has results on two datasets ({known} and {data}); give one "
                "dataset's results per model (seeds are averaged, sets are not)"
            )
        points[model][fraction].append(result)
    return {model: sorted(by_fraction.items()) for model, by_fraction in points.items()}


def averaged(results: list[dict]) -> dict:
    """The mean of each metric over ``results``, with ``runs`` and the image AUROC's ``low``/``high``."""
    images = [r["image_auroc"] for r in results]
    return {
        **{k: mean(r[k] for r in results) for k in METRICS},
        "runs": len(results),
        "low": min(images),
        "high": max(images),
    }


def cell(result: dict) -> str:
    text = f"{result['image_auroc']:.3f} / {result['pixel_auroc']:.3f} / {result['pro']:.3f}"
    if result["runs"] > 1:
        text += f" (mean of {result['runs']}; image {result['low']:.3f}–{result['high']:.3f})"
    return text


def markdown(points: dict[str, list[tuple[float, list[dict]]]]) -> str:
    """One row per model: image / pixel AUROC / PRO at each fraction (means over runs), and the image AUROC lost
    at each."""
    fractions = sorted({f for series in points.values() for f, _ in series})
    head = (
        "| model | "
        + " | ".join(f"{f:.0%}" for f in fractions)
        + " | image AUROC lost at "
        + ", ".join(f"{f:.0%}" for f in fractions[1:])
    )
    lines = [head + " |", "|" + " --- |" * (len(fractions) + 2)]
    for model, series in points.items():
        by_fraction = {f: averaged(r) for f, r in series}
        cells = [cell(r) if (r := by_fraction.get(f)) else "" for f in fractions]
        clean = by_fraction.get(0.0)
        lost = [
            f"{clean['image_auroc'] - by_fraction[f]['image_auroc']:.3f}" if clean and f in by_fraction else "—"
            for f in fractions[1:]
        ]
        lines.append(f"| {model} | " + " | ".join(cells) + " | " + ", ".join(lost) + " |")
    return "\n".join(lines) + "\n"


def plot(points: dict[str, list[tuple[float, list[dict]]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    for model, series in points.items():
        fractions = [100 * f for f, _ in series]
        means = [averaged(r) for _, r in series]
        image = [r["image_auroc"] for r in means]
        spread = [[r["image_auroc"] - r["low"] for r in means], [r["high"] - r["image_auroc"] for r in means]]
        line = axes.errorbar(fractions, image, yerr=spread, marker="o", capsize=3, label=f"{model}, image").lines[0]
        pixel = [r["pixel_auroc"] for r in means]
        axes.plot(fractions, pixel, marker=".", linestyle=":", color=line.get_color(), label=f"{model}, pixel")
    axes.set_xlabel("defective images in the training folder (%)")
    axes.set_ylabel("AUROC on the same test set")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "results", nargs="+", help="MODEL=EVAL.json, one per model, contamination and seed (seeds are averaged)"
    )
    parser.add_argument("--out", type=Path, help="PNG to write (and the table next to it as .md)")
    args = parser.parse_args(argv)

    def body() -> int:
        points = read_points(args.results)
        text = provenance("benchmarks.contamination", argv) + "\n\n" + markdown(points)
        print(text, end="")
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            plot(points, args.out)
            args.out.with_suffix(".md").write_text(text)
        return 0

    return run_tool("contamination", body, (OSError,))


if __name__ == "__main__":
    raise SystemExit(main())

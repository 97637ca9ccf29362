"""The calibration report: score histograms, ROC and PR curves, the hardest images, and a Markdown summary."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import ListedColormap, Normalize  # noqa: E402

from edge.heatmap import THRESHOLD_COLOURS, blend  # noqa: E402


def _histogram(path: Path, calibration: dict, good: np.ndarray, bad: np.ndarray | None) -> None:
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    bins = np.linspace(0, max(1e-3, float(np.max(np.concatenate([good, bad if bad is not None else good])))), 50)
    ax.hist(good, bins=bins, alpha=0.6, label=f"good ({len(good)})", color="tab:green")
    if bad is not None:
        ax.hist(bad, bins=bins, alpha=0.6, label=f"bad ({len(bad)})", color="tab:red")
    threshold = calibration["threshold"]
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.4f}")
    ax.set_xlabel("image score")
    ax.set_ylabel("images")
    ax.set_yscale("log")
    ax.set_title(f"scores; target false-reject rate {calibration['target_false_reject']:g}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _curves(path: Path, calibration: dict, good: np.ndarray, bad: np.ndarray) -> None:
    thresholds = np.unique(np.concatenate([good, bad, [np.inf]]))[::-1]
    tpr = np.array([(bad >= t).mean() for t in thresholds])
    fpr = np.array([(good >= t).mean() for t in thresholds])
    precision = np.array([(bad >= t).sum() / max(1, (bad >= t).sum() + (good >= t).sum()) for t in thresholds])
    chosen = calibration["threshold"]
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    roc.plot(fpr, tpr)
    roc.scatter([(good >= chosen).mean()], [(bad >= chosen).mean()], color="black", zorder=3, label="threshold")
    roc.set_xlabel("false-reject rate (good parts failed)")
    roc.set_ylabel("detection rate (bad parts failed)")
    roc.set_title("ROC")
    roc.legend()
    pr.plot(tpr, precision)
    pr.set_xlabel("recall (bad parts failed)")
    pr.set_ylabel("precision")
    pr.set_title("precision-recall")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _short(name: str, length: int = 32) -> str:
    """A file name shortened in the middle to ``length`` characters, so a title never runs over its image."""
    return name if len(name) <= length else f"{name[: length // 2 - 1]}…{name[-(length - length // 2) :]}"


Thumbnail = tuple[str, float, np.ndarray, np.ndarray]  # file name, score, RGB image, anomaly map


def _grid(path: Path, rows: list[tuple[str, bool, list[Thumbnail]]], calibration: dict) -> None:
    """One row of images per set (title, whether the set is good, thumbnails), each image with its map on the
    threshold colour scale (red: over the pixel threshold), its file name and score, and whether it is a false
    reject or an escape at the threshold; a colour bar at the bottom."""
    rows = [r for r in rows if r[2]]
    threshold, pixel = calibration["threshold"], calibration["pixel_threshold"]
    columns = max(len(items) for _, _, items in rows)
    fig = plt.figure(figsize=(max(6.0, 2.4 * columns), 3.0 * len(rows) + 0.9), dpi=110, layout="constrained")
    parts = fig.subfigures(len(rows) + 1, 1, height_ratios=[3.0] * len(rows) + [0.9])
    for part, (title, good, items) in zip(parts, rows, strict=False):
        part.suptitle(title, fontsize=11, fontweight="bold")
        axes = part.subplots(1, columns, squeeze=False)[0]
        for ax, item in zip(axes, items + [None] * (columns - len(items)), strict=True):
            ax.axis("off")
            if item is None:
                continue
            name, score, image, amap = item
            ax.imshow(blend(image, amap, pixel))
            failed = score >= threshold
            wrong = failed == good  # a good part failed, or a bad part passed
            mark = f" {'≥' if failed else '<'} {threshold:.4f}: {'false reject' if good else 'escape'}" if wrong else ""
            ax.set_title(f"{_short(name)}\nscore {score:.4f}{mark}", fontsize=8, color="darkred" if wrong else "black")
    colours = ListedColormap(THRESHOLD_COLOURS / 255.0).with_extremes(over=THRESHOLD_COLOURS[-1] / 255.0)
    bar = fig.colorbar(
        ScalarMappable(Normalize(0.0, 2 * pixel), colours),
        cax=parts[-1].add_axes((0.15, 0.55, 0.7, 0.2)),
        orientation="horizontal",
        extend="max",
    )
    bar.set_label(f"anomaly map: red at or above the pixel threshold {pixel:.4g}", fontsize=9)
    fig.savefig(path)
    plt.close(fig)


def _percent(rate: float) -> str:
    return f"{100 * rate:.3g} %"


def write_report(folder: Path, calibration: dict, good, bad) -> Path:
    """Write PNGs and ``report.md`` into ``folder``; returns the Markdown file."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "scores.csv", "w", encoding="utf-8") as handle:
        handle.write("set,image,score,map_max\n")
        for name, scored in (("good", good), ("bad", bad)):
            for path, score, peak in zip(scored.paths, scored.scores, scored.map_maxima, strict=True) if scored else ():
                handle.write(f"{name},{path},{score:.6f},{peak:.6f}\n")
    _histogram(folder / "scores.png", calibration, good.scores, bad.scores if bad else None)
    rows = [
        (
            "good images with the highest scores",
            True,
            [
                (good.paths[i].name, good.scores[i], *good.thumbnails[i])
                for i in sorted(good.thumbnails, key=lambda i: -good.scores[i])
            ],
        )
    ]
    if bad is not None:
        _curves(folder / "roc_pr.png", calibration, good.scores, bad.scores)
        rows.append(
            (
                "bad images with the lowest scores",
                False,
                [
                    (bad.paths[i].name, bad.scores[i], *bad.thumbnails[i])
                    for i in sorted(bad.thumbnails, key=lambda i: bad.scores[i])
                ],
            )
        )
    _grid(folder / "hardest.png", rows, calibration)
    low, high = calibration["false_reject_interval"]
    lines = [
        "# Calibration report",
        "",
        f"- engine sha256: `{calibration['engine_sha256']}`",
        f"- created: {calibration['created']}",
        f"- good images: {calibration['good_images']} from `{calibration['good_folder']}`; every score is in "
        "`scores.csv`",
        "",
        "## Threshold",
        "",
        f"**Image-score threshold: {calibration['threshold']:.4f}** (pixel threshold for regions: "
        f"{calibration['pixel_threshold']:.4f}).",
        "",
        f"- target false-reject rate: {_percent(calibration['target_false_reject'])} of good parts",
        f"- expected false-reject rate at the threshold: {_percent(calibration['expected_false_reject'])}, "
        f"95 % interval {_percent(low)} to {_percent(high)} (bootstrap of the tail fit)",
        f"- observed on these good images: {_percent(calibration['observed_false_reject'])}; without any model "
        f"these {calibration['good_images']} images prove only a rate below "
        f"{_percent(calibration['proven_false_reject_upper'])} (Clopper-Pearson, 95 %)",
        f"- method: {calibration['method']}",
    ]
    if "bad" in calibration:
        b = calibration["bad"]
        lines += [
            "",
            "## With the bad images",
            "",
            f"- bad images: {b['bad_images']} from `{calibration['bad_folder']}`",
            f"- escapes at the threshold: {b['escapes_at_threshold']} ({_percent(b['escape_at_threshold'])})",
            "",
            "| threshold | value | false rejects (these images) | escapes |",
            "| --- | --- | --- | --- |",
            f"| chosen (meets the false-reject target) | {calibration['threshold']:.4f} | "
            f"{_percent(calibration['observed_false_reject'])} | {_percent(b['escape_at_threshold'])} |",
            f"| F1-optimal | {b['f1_optimal']['threshold']:.4f} | {_percent(b['f1_optimal']['false_reject'])} | "
            f"{_percent(b['f1_optimal']['escape'])} |",
            f"| zero escapes | {b['zero_escape']['threshold']:.4f} | {_percent(b['zero_escape']['false_reject'])} | "
            f"{_percent(b['zero_escape']['escape'])} |",
            "",
            "![ROC and PR](roc_pr.png)",
        ]
    lines += ["", "![scores](scores.png)", "", "![hardest images](hardest.png)", ""]
    path = folder / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path

"""Evaluating a checkpoint on an MVTec-style test set: image and pixel metrics, per defect type, and a picture."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from edge.heatmap import blend, colour_bar
from edge.sidecar import FrameSpec
from export.checkpoint import load_model
from export.data.images import GOOD, TestSample, load_test_set, resize_image, resize_mask
from export.devices import resolve_device
from export.errors import DataError
from export.graph.deployable import ReferenceGraph
from export.metrics import auroc, f1_max, pixel_auroc, pro_auc
from export.models.base import AnomalyModel


@torch.no_grad()
def predict(
    model: AnomalyModel, images: list[np.ndarray], batch_size: int = 16, model_map: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Anomaly maps ``N×M×M`` and image scores ``N`` for RGB uint8 images of one size, computed as the FP32
    reference of an artefact exported for frames of that size (:class:`export.graph.deployable.ReferenceGraph`):
    the graph's frame preprocessing, the model, its score head, the map at the frame's size (``model_map``: at
    the model's size, the map the score head pools)."""
    sizes = {image.shape for image in images}
    if len(sizes) > 1:
        raise DataError(f"images of {len(sizes)} sizes ({', '.join(map(str, sorted(sizes)))}): give one size")
    device = next(model.parameters()).device
    height, width = images[0].shape[:2]
    graph = ReferenceGraph(model, FrameSpec(width, height, "rgb8")).to(device).eval()
    maps, scores = [], []
    for start in range(0, len(images), batch_size):
        frames = torch.from_numpy(np.ascontiguousarray(np.stack(images[start : start + batch_size]))).to(device)
        anomaly_map = graph.model_map(frames)  # as graph(frames) does, keeping the model-size map too
        maps.append((anomaly_map if model_map else graph.to_frame(anomaly_map))[:, 0].cpu().numpy())
        scores.append(graph.score(anomaly_map).cpu().numpy())
    return np.concatenate(maps), np.concatenate(scores)


def detection_metrics(labels: np.ndarray, scores: np.ndarray, masks: np.ndarray, maps: np.ndarray) -> dict:
    """Image AUROC and F1-max, pixel AUROC and F1-max, and PRO (to 30 % FPR) for one set of samples."""
    return {
        "image_auroc": auroc(labels, scores),
        "pixel_auroc": pixel_auroc(masks, maps),
        "pro": pro_auc(masks, maps, max_fpr=0.3),
        "f1_max": f1_max(labels, scores),
        "pixel_f1_max": f1_max(masks, maps),
    }


def evaluate_samples(model: AnomalyModel, samples: list[TestSample]) -> tuple[dict, np.ndarray, np.ndarray]:
    """Metrics over all samples and per defect type (each against the good images), with maps and scores."""
    maps, scores = predict(model, [s.image for s in samples])
    labels = np.array([s.is_defective for s in samples])
    masks = np.stack([resize_mask(s.mask, maps.shape[-1]) for s in samples])
    defects = np.array([s.defect for s in samples])
    good = defects == GOOD
    result = {**detection_metrics(labels, scores, masks, maps), "images": len(samples), "per_defect": {}}
    for defect in sorted(set(defects) - {GOOD}):
        keep = good | (defects == defect)
        result["per_defect"][defect] = {
            **detection_metrics(labels[keep], scores[keep], masks[keep], maps[keep]),
            "images": int((defects == defect).sum()),
        }
    return result, maps, scores


MIN_PANEL = 128  # grid images narrower than this are enlarged by a whole factor


def _label(image: np.ndarray, text: str, scale: float = 0.4) -> np.ndarray:
    """``image`` (RGB) with a white strip above it holding ``text``."""
    strip = np.full((18, image.shape[1], 3), 255, np.uint8)
    cv2.putText(strip, text, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([strip, image], axis=0)


def display_level(samples: list[TestSample], maps: np.ndarray) -> tuple[float, str]:
    """The map value at the middle of the grid's colour scale, and what it is: the highest pixel of any good test
    image (what edge-calibrate makes the pixel threshold), or without good images the median image's highest
    pixel."""
    good = np.array([s.defect == GOOD for s in samples])
    if good.any():
        return float(maps[good].max()), "the highest pixel of any good test image"
    return float(np.median(maps.max(axis=(1, 2)))), "the median of the images' highest pixels (no good images)"


def write_grid(
    path: Path,
    samples: list[TestSample],
    maps: np.ndarray,
    scores: np.ndarray,
    per_type: int | None = 3,
    columns: int = 3,
) -> None:
    """A PNG of tiles (input | ground truth | anomaly map over the input, each headed), ``per_type`` images per
    defect type (None: every image), in rows under a header that explains the colour scale (:mod:`edge.heatmap`:
    red is over the middle level, see :func:`display_level`)."""
    level, meaning = display_level(samples, maps)
    tiles, seen = [], {}
    for sample, amap, score in zip(samples, maps, scores, strict=True):
        if per_type is not None and seen.get(sample.defect, 0) >= per_type:
            continue
        seen[sample.defect] = seen.get(sample.defect, 0) + 1
        size = amap.shape[-1]  # the panels at the map's size
        k = -(-MIN_PANEL // size)  # small images enlarged (pixels repeated), so labels fit
        image = np.repeat(np.repeat(resize_image(sample.image, size), k, axis=0), k, axis=1)
        truth = np.repeat(np.repeat(resize_mask(sample.mask, size), k, axis=0), k, axis=1)
        panels = [
            _label(image, "input"),
            _label(np.repeat(truth[..., None].astype(np.uint8) * 255, 3, axis=2), "ground truth"),
            _label(blend(image, amap, level), "anomaly map"),
        ]
        tile = _label(np.concatenate(panels, axis=1), f"{sample.defect}/{sample.path.name}  score {score:.4f}")
        tiles.append(np.pad(tile, ((2, 6), (2, 6), (0, 0)), constant_values=255))
    tiles += [np.full_like(tiles[0], 255)] * (-len(tiles) % columns)
    rows = [np.concatenate(tiles[i : i + columns], axis=1) for i in range(0, len(tiles), columns)]
    body = np.concatenate(rows, axis=0)
    shown = (
        f"all {len(samples)} test images"
        if per_type is None
        else f"{sum(seen.values())} of {len(samples)} test images ({per_type} per type; --all shows every one)"
    )
    header = np.full((60, body.shape[1], 3), 255, np.uint8)
    lines = [
        f"{shown}: input | ground truth (white = defect) | anomaly map over the input",
        f"colour: red = at or above {level:.4g}, {meaning}",
    ]
    for i, line in enumerate(lines):
        cv2.putText(header, line, (4, 16 + 18 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    bar_width = min(body.shape[1] - 8, 300)
    header[44:56, 4 : 4 + bar_width] = colour_bar(bar_width, 12)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate([header, body], axis=0), cv2.COLOR_RGB2BGR))


def evaluate(
    checkpoint: Path, data: Path, device: str = "auto", grid: Path | None = None, grid_all: bool = False
) -> dict:
    """Load a checkpoint, evaluate it on ``data/test`` and optionally write the picture grid (three images per
    defect type, or with ``grid_all`` every image)."""
    model, payload = load_model(checkpoint, resolve_device(device))
    samples = load_test_set(data)
    result, maps, scores = evaluate_samples(model, samples)
    if grid is not None:
        write_grid(grid, samples, maps, scores, per_type=None if grid_all else 3)
        result["grid"] = str(grid)
    result["checkpoint"] = str(checkpoint)
    result["data"] = str(data)
    return result

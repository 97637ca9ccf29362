"""Evaluating a checkpoint on an MVTec-style test set: image and pixel metrics, per defect type, and a picture."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from export.checkpoint import load_model
from export.data.batches import to_batch
from export.data.images import GOOD, TestSample, load_test_set
from export.devices import resolve_device
from export.metrics import auroc, f1_max, pixel_auroc, pro_auc
from export.models.base import AnomalyModel


@torch.no_grad()
def predict(model: AnomalyModel, images: list[np.ndarray], batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Anomaly maps ``N×H×W`` and image scores ``N`` (the model's score head) for RGB uint8 images."""
    device = next(model.parameters()).device
    maps, scores = [], []
    for start in range(0, len(images), batch_size):
        batch = to_batch(images[start : start + batch_size], device, model.normalisation)
        batch_maps = model.anomaly_map(batch).float()
        maps.append(batch_maps[:, 0].cpu().numpy())
        scores.append(model.score_head(batch_maps).cpu().numpy())
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
    masks = np.stack([s.mask for s in samples])
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


def heatmap_overlay(image: np.ndarray, amap: np.ndarray) -> np.ndarray:
    """RGB image with the anomaly map (0…1) as a JET heatmap blended over it."""
    heat = cv2.applyColorMap((np.clip(amap, 0.0, 1.0) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(image, 0.5, cv2.cvtColor(heat, cv2.COLOR_BGR2RGB), 0.5, 0.0)


def write_grid(
    path: Path, samples: list[TestSample], maps: np.ndarray, scores: np.ndarray, per_type: int = 3, columns: int = 3
) -> None:
    """A PNG of tiles (input | ground truth | heatmap with its score), ``per_type`` per defect type, in rows."""
    tiles, seen = [], {}
    for sample, amap, score in zip(samples, maps, scores, strict=True):
        if seen.get(sample.defect, 0) >= per_type:
            continue
        seen[sample.defect] = seen.get(sample.defect, 0) + 1
        truth = np.repeat(sample.mask[..., None].astype(np.uint8) * 255, 3, axis=2)
        tile = np.concatenate([sample.image, truth, heatmap_overlay(sample.image, amap)], axis=1)
        label = f"{sample.defect} {sample.path.name} score {score:.3f}"
        cv2.putText(tile, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1, cv2.LINE_AA)
        tiles.append(np.pad(tile, ((2, 2), (2, 2), (0, 0)), constant_values=255))
    tiles += [np.full_like(tiles[0], 255)] * (-len(tiles) % columns)
    rows = [np.concatenate(tiles[i : i + columns], axis=1) for i in range(0, len(tiles), columns)]
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))


def evaluate(checkpoint: Path, data: Path, device: str = "auto", grid: Path | None = None) -> dict:
    """Load a checkpoint, evaluate it on ``data/test`` and optionally write the picture grid."""
    model, payload = load_model(checkpoint, resolve_device(device))
    samples = load_test_set(data, model.config.image_size)
    result, maps, scores = evaluate_samples(model, samples)
    if grid is not None:
        write_grid(grid, samples, maps, scores)
        result["grid"] = str(grid)
    result["checkpoint"] = str(checkpoint)
    result["data"] = str(data)
    return result
